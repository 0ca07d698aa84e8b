"""ImageNet classes, the WordNet hierarchy above them, and the rules for derived labels."""
