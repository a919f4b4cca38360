"""`falip serve`: FALIP in the browser."""
