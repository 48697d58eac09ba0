"""What an ONNX import rule is written with, the floor below the rules and the importer:
the rule API and its registry (node.py), what import knows of a value (values.py), folding
at import (folding.py), the .dl text several rules write (writing.py)."""
