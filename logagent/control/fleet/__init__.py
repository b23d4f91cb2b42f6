"""Fleet control through etcd: groups, host overrides, status written back, staged rollouts.

keys.py names the keys, layers.py merges a host's configuration from them, rollout.py chooses
canaries, bake.py checks a candidate on a canary, status.py writes the host's status back under a
lease, view.py reads the fleet for `logagent fleet status`. docs/etcd-keys-fleet.md is the layout.
"""
