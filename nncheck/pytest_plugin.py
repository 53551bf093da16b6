"""pytest plugin (entry point ``pytest11``). Filled in by the pytest-plugin work (issue 4)."""
