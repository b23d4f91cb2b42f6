"""The control plane: what to collect, from etcd (watched live) or from config.ini."""
