"""Small data sets shipped with dlc (digits.csv.gz): package data that the data sources read
by path (runtime/data/images.py); no Python."""
