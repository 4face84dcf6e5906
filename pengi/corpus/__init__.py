"""The offline mini corpus: synthetic and Debian-packaged audio in real datasets' native layouts.

Entry point: :func:`pengi.corpus.generate.generate_corpus`. See ``pengi/corpus/README.md``.
"""
