"""Test configuration shared by every tier."""
