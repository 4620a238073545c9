"""Real test-side parts shared by every test: the AWS emulator and the webhook recorder."""
