"""paramcorr."""
