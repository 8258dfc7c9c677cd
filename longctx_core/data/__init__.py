"""Samples and where they come from, shared by synthesis (`data_gen`) and evaluation:

records      `QARecord`, `Document`, `Malformed`
sources      one loader per `data.source.kind` -> `QARecord` | `Malformed`
builtin      the procedural bilingual world (also trains the tiny tokenizer: `tokenizer_training_texts`)
evidence     the sentence(s) of the gold document(s) that hold the answer
compose      one long sample from records + a distractor pool (`compose_sample`)
styles       prompt/answer templates (en, zh) and `split_reply`, their parser
split        the deterministic train/eval split of questions (`split_of`)
chat         chat-template tokenisation with labels on the assistant turns only
text, seeding, token_count   text helpers, derived seeds, token counting without a model
"""
