//! The LLM codec: arithmetic coding driven by a language model's next-token probabilities.
