"""Datasets: the embedded synthetic set, image decoding and the ADM centre crop."""
