"""nfgrep: layer-7 classification (language, engine, reassembly, capture input)."""
