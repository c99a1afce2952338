"""`agenttrain view`: a local, read-only web viewer over run directories (runs, epochs, diffs, transcripts)."""

from agenttrain.viewer.server import ViewerServer, serve, start

__all__ = ["ViewerServer", "serve", "start"]
