"""Models: `loading` (checkpoint path, tokenizer, 4-bit or not), `rope` (the context extension), `lora`
(adapters: add, save, load, merge), `finetuned` (using a trained adapter outside the pipeline), `attention`,
`families` (tested model families, LoRA targets), `gguf` and `embedded` (real weights offline), `tiny` and
`qwen_vocab` (the tiny test model and the offline Qwen vocabulary), `chatml`."""
