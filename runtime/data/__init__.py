"""Data: sources, file formats, downloads, word vectors."""
