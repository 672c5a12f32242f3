#pragma once
/// \file
/// The text layer: the tokenizers the shipped models use -- BERT WordPiece (BLIP, InstructBLIP's
/// Q-Former) with LAVIS's caption pre-processing, and SentencePiece BPE (`tokenizer.model` of
/// LLaMA checkpoints), read natively.

#include "agla/text/sentencepiece.hpp"
#include "agla/text/wordpiece.hpp"
