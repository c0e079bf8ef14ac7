"""What the dashboard shows, read from the store."""
