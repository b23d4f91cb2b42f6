"""Stand-ins where the real part is not the point."""

from __future__ import annotations

from logagent.config.sysinfo import SysinfoSettings
from logagent.sources.files.entry import CollectEntry


class RecordingAgent:
    """What a control plane (EtcdControl) drives, recording each configuration it is handed."""

    def __init__(self) -> None:
        self.collect: list[list[CollectEntry]] = []
        self.sysinfo: list[SysinfoSettings] = []

    async def apply_collect(self, entries: list[CollectEntry]) -> None:
        self.collect.append(list(entries))

    def apply_sysinfo(self, settings: SysinfoSettings) -> None:
        self.sysinfo.append(settings)

    @property
    def paths(self) -> list[str]:
        """The paths of the last collect list applied ([] before any)."""
        return [e.path for e in self.collect[-1]] if self.collect else []

    @property
    def applied_paths(self) -> list[list[str]]:
        """The paths of every collect list applied, in order."""
        return [[e.path for e in entries] for entries in self.collect]
