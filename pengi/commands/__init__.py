"""One module per command of ``pengi.cli``: each parses its flags and calls the library."""
