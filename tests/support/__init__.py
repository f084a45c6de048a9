"""Helpers shared by the tests: real services for the test session, started by the project's scripts."""
