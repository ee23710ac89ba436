"""The running system: the daemon, the auto-executor, the emergency stop."""
