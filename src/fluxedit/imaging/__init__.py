"""Image bytes in and out: decoding user files, encoding results with metadata."""
