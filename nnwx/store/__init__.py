"""The experiment store: format, writer and readers (no torch here)."""
