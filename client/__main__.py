"""``python -m stylecast.client`` runs the CLI."""

from stylecast.client.cli import app

app()
