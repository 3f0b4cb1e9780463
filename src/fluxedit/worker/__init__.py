"""The process boundary: one child process per GPU owns an engine; the parent talks to it over a pipe."""
