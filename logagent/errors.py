"""One error tree for the agent.

    LogagentError
    ├── ConfigError            bad config.ini, env override, etcd value or CLI argument
    │   └── CollectConfigError a collect entry that is refused (names key and entry)
    ├── RegistryError          the offset registry cannot be read or written
    ├── SourceError            a file cannot be opened or read (reason: a metric label)
    │   ├── NotAllowed         the opened file lies outside [agent] allowed_paths
    │   ├── AlreadyCollected   the same file (device, inode) is collected under another name
    │   └── FileReplaced       another file now has the name of one we had closed
    ├── KafkaError             the producer or broker failed (retriable says if waiting helps)
    │   └── Fenced             exactly_once: another agent with this transactional.id took over (exit 3)
    └── EtcdError              etcd unreachable or refused a request (retriable)

Library errors are converted at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class LogagentError(Exception):
    """Base of every error the agent raises on purpose."""

    retriable: bool = False
    exit_status: int = 1  # the process's exit status when this error stops the agent


class ConfigError(LogagentError):
    """A setting is missing, malformed or out of range."""


class CollectConfigError(ConfigError):
    """A collect entry (from etcd or [collect] files) is refused."""


class RegistryError(LogagentError):
    """The offset registry could not be loaded or saved."""

    retriable = True


class SourceError(LogagentError):
    """A collected file could not be opened or read; `reason` is its metric label (by default
    the class's own)."""

    retriable = True
    default_reason = "io_error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason


class NotAllowed(SourceError):
    """The file that was opened lies outside [agent] allowed_paths (decided on the descriptor)."""

    retriable = False
    default_reason = "not_allowed"


class AlreadyCollected(SourceError):
    """The file (device, inode) is already collected under another name: one tailer per file.
    `holder` is the tailer that reads it."""

    retriable = False
    default_reason = "duplicate"

    def __init__(self, message: str, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder


class FileReplaced(SourceError):
    """While its descriptor was closed, the file's name came to point at another file."""

    retriable = False
    default_reason = "replaced"


class KafkaError(LogagentError):
    """Kafka refused or could not take a message."""

    def __init__(self, message: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class Fenced(KafkaError):
    """exactly_once: another agent with this transactional.id (the same [agent] id) took over the
    transactions. Exit status 3, which the systemd unit does not restart: restarting would fence
    the other agent, which would fence this one again, for ever (docs/delivery.md)."""

    exit_status = 3

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)


class EtcdError(LogagentError):
    """etcd could not be reached or refused a request."""

    retriable = True
