"""pytest plugin for wstrio (fixtures arrive with the embedding issue)."""
