"""The command line: `logagent run|check|config`."""
