// Chat fine-tuning data: JSONL files of conversations in OpenAI message format (one object
// {"messages": [...], "tools": ..., "thinking": b} or a bare message array per line) turned into
// token ids in the model's chat format, with a loss mask that is 1 exactly on the tokens of the
// assistant turns (their content, reasoning, tool calls and the EOS that ends the turn), so the
// model learns to answer, not to write the user's part.
// The turns are found by rendering each conversation prefix (history + generation prompt, and
// history + the assistant turn) and tokenizing the differences: every boundary falls on a special
// token, so the pieces tokenize as the whole does. Not here: batching or shuffling (finetune.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/chat_types.h"
#include "tokenizer/tokenizer.h"

namespace dseek::train {

struct ChatExample {
  std::vector<int32_t> tokens;     // [T] the rendered conversation
  std::vector<uint8_t> loss_mask;  // [T] 1: an assistant-turn token (a target the loss counts)
  int64_t line = 0;                // 1-based line of the JSONL file (0: not from a file)
};

// One conversation; errors name the message ("messages[2]: ...").
Expected<ChatExample> tokenize_chat(const tokenizer::Tokenizer& tok, tokenizer::ChatFormat format,
                                    const tokenizer::ChatRequest& req);

// Every non-blank line of `path`; errors are one line "path:LINE: field: what is wrong".
Expected<std::vector<ChatExample>> load_chat_jsonl(const std::string& path, const tokenizer::Tokenizer& tok,
                                                   tokenizer::ChatFormat format);

}  // namespace dseek::train
