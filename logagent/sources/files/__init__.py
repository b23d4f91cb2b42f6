"""The file source.

Which files (entry, globs, inotify, manager, budget), reading them (opener, tailer, lines,
multiline), their identity and acknowledged offsets (registry, acks), and what rotation leaves
behind (spool, recovery, generations).
"""
