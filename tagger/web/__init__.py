"""The web page and HTTP API in the daemon (empty until the web issue lands)."""
