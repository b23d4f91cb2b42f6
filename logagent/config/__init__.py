"""config.ini into typed settings, the checks shared by every input, and what a reload may change."""
