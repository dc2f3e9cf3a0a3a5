// JSON schema -> guided grammar nodes (guided_grammar.h). Output is Python json.dumps style
// (", " and ": " separators, no other whitespace), the layout DeepSeek's tool-call arguments
// were trained on. Supported: type (one or a list), properties / required, additionalProperties
// (false, or a schema for free-form objects), items, minItems / maxItems, enum, const, anyOf /
// oneOf, minLength / maxLength, minimum >= 0 (no sign). Objects write their properties in
// schema order; required ones always, optional ones may be skipped. Other keywords (pattern,
// format, $ref, numeric ranges, uniqueItems, allOf beyond its first entry) are not enforced.
#pragma once

#include <functional>
#include <string>

#include "base/status.h"
#include "serve/guided_grammar.h"
#include "tokenizer/chat_types.h"

namespace dseek::serve::guided {

class SchemaCompiler {
 public:
  // `literal` turns fixed text into units (marker texts become symbol units where the
  // vocabulary has them).
  SchemaCompiler(Grammar* g, std::function<Units(std::string_view)> literal)
      : g_(g), literal_(std::move(literal)) {}

  // A JSON value valid for `schema` (nullptr: any value). `path` names the schema in errors.
  Expected<int32_t> value(const tokenizer::OrderedJson* schema, const std::string& path, int32_t depth);
  // A JSON object valid for `schema` (nullptr: any object).
  Expected<int32_t> object(const tokenizer::OrderedJson* schema, const std::string& path, int32_t depth);
  // V3.2's DSML argument list for an object schema: one <｜DSML｜parameter> per property, string
  // values raw (string="true"), others JSON (string="false"), then "\n</｜DSML｜invoke>".
  Expected<int32_t> dsml_arguments(const tokenizer::OrderedJson* schema, const std::string& path);

  // False when what follows the value could be read as more of it (numbers, bare literals).
  bool self_delimiting(int32_t node) const;

 private:
  struct Prop {
    std::string key;
    const tokenizer::OrderedJson* schema;
    bool required;
  };
  Expected<std::vector<Prop>> properties(const tokenizer::OrderedJson& schema, const std::string& path);
  Expected<int32_t> typed(const tokenizer::OrderedJson& schema, const std::string& type, const std::string& path,
                          int32_t depth);
  Expected<int32_t> union_of(const std::vector<int32_t>& alternatives);
  // Per-position key choices of an object: cand(j, first) is the text choosing property j.
  int32_t object_node(const std::vector<Prop>& props, const std::vector<int32_t>& values,
                      const std::function<Units(size_t j, bool first)>& cand, const Units& close_first,
                      const Units& close_later);
  void first_units(int32_t node, std::vector<bool>* out) const;

  Grammar* g_;
  std::function<Units(std::string_view)> literal_;
};

}  // namespace dseek::serve::guided
