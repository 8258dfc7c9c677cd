"""Model-side support: the tested model families and what LoRA targets in each (`families`); checkpoint
acquisition: GGUF import (`gguf`) and embedded real models (`embedded`)."""
