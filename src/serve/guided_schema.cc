// JSON schema compiler for guided decoding (see guided_schema.h).
#include "serve/guided_schema.h"

#include <algorithm>

namespace dseek::serve::guided {
namespace {

using tokenizer::OrderedJson;

std::string dumps(const OrderedJson& v) { return tokenizer::python_json_dumps(v); }

// A non-negative integer keyword (minItems, maxLength...), or -1 when absent.
Expected<int64_t> count_keyword(const OrderedJson& s, const char* key, const std::string& path) {
  if (!s.contains(key)) return int64_t{-1};
  const OrderedJson& v = s[key];
  if (!v.is_number_integer() || v.get<int64_t>() < 0)
    return Status::errorf("{}.{}: expected a non-negative integer", path, key);
  return v.get<int64_t>();
}

int32_t clamp_max(int64_t schema_max, int32_t cap, int64_t schema_min) {
  int64_t m = schema_max < 0 ? cap : std::min<int64_t>(schema_max, cap);
  return static_cast<int32_t>(std::max<int64_t>(m, std::max<int64_t>(schema_min, 0)));
}

}  // namespace

Expected<std::vector<SchemaCompiler::Prop>> SchemaCompiler::properties(const OrderedJson& s, const std::string& path) {
  std::vector<Prop> props;
  if (s.contains("properties")) {
    const OrderedJson& p = s["properties"];
    if (!p.is_object()) return Status::errorf("{}.properties: expected an object", path);
    for (auto it = p.begin(); it != p.end(); ++it) props.push_back({it.key(), &it.value(), false});
  }
  if (s.contains("required")) {
    const OrderedJson& r = s["required"];
    if (!r.is_array()) return Status::errorf("{}.required: expected an array of strings", path);
    for (const OrderedJson& name : r) {
      if (!name.is_string()) return Status::errorf("{}.required: expected an array of strings", path);
      const std::string key = name.get<std::string>();
      auto it = std::find_if(props.begin(), props.end(), [&](const Prop& p) { return p.key == key; });
      if (it != props.end()) it->required = true;
      else props.push_back({key, nullptr, true});  // required without a schema: any value
    }
  }
  return props;
}

int32_t SchemaCompiler::object_node(const std::vector<Prop>& props, const std::vector<int32_t>& values,
                                    const std::function<Units(size_t, bool)>& cand, const Units& close_first,
                                    const Units& close_later) {
  // Position p: properties before p are decided. The next key is any property from p up to
  // and including the first required one; the object may close once no required one is left.
  const size_t n = props.size();
  std::vector<int32_t> choices(n + 1);
  for (size_t p = 0; p <= n; ++p) {
    std::vector<Units> cands;
    std::vector<int32_t> conts, tags;
    bool required_left = false;
    for (size_t j = p; j < n; ++j) {
      cands.push_back(cand(j, p == 0));
      conts.push_back(values[j]);
      tags.push_back(static_cast<int32_t>(j));
      if (props[j].required) {
        required_left = true;
        break;
      }
    }
    if (!required_left) {
      cands.push_back(p == 0 ? close_first : close_later);
      conts.push_back(-1);
      tags.push_back(kCloseTag);
    }
    choices[p] = g_->add_choice(std::move(cands), std::move(conts), std::move(tags));
  }
  Node obj;
  obj.kind = NodeKind::kObject;
  obj.children = std::move(choices);
  return g_->add(std::move(obj));
}

Expected<int32_t> SchemaCompiler::object(const OrderedJson* schema, const std::string& path, int32_t depth) {
  std::vector<Prop> props;
  const OrderedJson* extra = nullptr;  // additionalProperties schema
  bool closed = false;                 // additionalProperties: false
  if (schema != nullptr) {
    if (!schema->is_object()) return Status::errorf("{}: expected a JSON schema object", path);
    DSEEK_ASSIGN_OR_RETURN(props, properties(*schema, path));
    if (schema->contains("additionalProperties")) {
      const OrderedJson& ap = (*schema)["additionalProperties"];
      if (ap.is_boolean()) closed = !ap.get<bool>();
      else if (ap.is_object()) extra = &ap;
      else return Status::errorf("{}.additionalProperties: expected a boolean or a schema object", path);
    }
  }
  if (props.empty()) {
    if (closed) return g_->add_literal(bytes_to_units("{}"));
    int32_t value_node;
    if (extra != nullptr) {
      DSEEK_ASSIGN_OR_RETURN(value_node, value(extra, path + ".additionalProperties", depth + 1));
    } else {
      value_node = g_->any_at(depth + 1);
    }
    Node key;
    key.kind = NodeKind::kString;
    key.max_len = g_->limits.max_string_chars;
    const int32_t key_node = g_->add(std::move(key));
    Node o;
    o.kind = NodeKind::kFreeObject;
    o.key_node = key_node;
    o.item = value_node;
    o.max_items = g_->limits.max_object_keys;
    return g_->add(std::move(o));
  }
  std::vector<int32_t> values;
  for (const Prop& p : props) {
    DSEEK_ASSIGN_OR_RETURN(int32_t v, value(p.schema, path + ".properties." + p.key, depth + 1));
    values.push_back(v);
  }
  return object_node(
      props, values,
      [&](size_t j, bool first) { return bytes_to_units((first ? "{" : ", ") + dumps(OrderedJson(props[j].key)) + ": "); },
      bytes_to_units("{}"), bytes_to_units("}"));
}

Expected<int32_t> SchemaCompiler::dsml_arguments(const OrderedJson* schema, const std::string& path) {
  std::vector<Prop> props;
  if (schema != nullptr) {
    if (!schema->is_object()) return Status::errorf("{}: expected a JSON schema object", path);
    DSEEK_ASSIGN_OR_RETURN(props, properties(*schema, path));
  }
  const Units close = literal_("</｜DSML｜parameter>");
  std::vector<int32_t> values;
  std::vector<bool> raw;
  for (const Prop& p : props) {
    if (p.key.empty() || p.key.find_first_of("\"<>\n") != std::string::npos)
      return Status::errorf("{}.properties: key '{}' cannot be written as a DSML parameter name", path, p.key);
    const std::string ppath = path + ".properties." + p.key;
    const OrderedJson* s = p.schema;
    const bool is_obj = s != nullptr && s->is_object();
    // Enum/const of plain strings: written raw, as one of the values.
    std::vector<Units> raw_values;
    if (is_obj && (s->contains("enum") || s->contains("const"))) {
      OrderedJson vals = s->contains("const") ? OrderedJson::array({(*s)["const"]}) : (*s)["enum"];
      bool all_plain = vals.is_array() && !vals.empty();
      if (all_plain)
        for (const OrderedJson& v : vals) {
          if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().find('<') != std::string::npos) {
            all_plain = false;
            break;
          }
          raw_values.push_back(bytes_to_units(v.get<std::string>()));
        }
      if (!all_plain) raw_values.clear();
    }
    const bool raw_string = is_obj && raw_values.empty() && !s->contains("enum") && !s->contains("const") &&
                            s->contains("type") && (*s)["type"] == "string";
    if (!raw_values.empty()) {
      std::vector<int32_t> none(raw_values.size(), -1);
      const int32_t choice = g_->add_choice(std::move(raw_values), none, none);
      values.push_back(g_->add_seq({choice, g_->add_literal(close)}));
    } else if (raw_string) {
      DSEEK_ASSIGN_OR_RETURN(int64_t min_len, count_keyword(*s, "minLength", ppath));
      DSEEK_ASSIGN_OR_RETURN(int64_t max_len, count_keyword(*s, "maxLength", ppath));
      Node n;
      n.kind = NodeKind::kString;
      n.raw = true;
      n.close = close;
      n.min_len = static_cast<int32_t>(std::max<int64_t>(min_len, 0));
      n.max_len = clamp_max(max_len, g_->limits.max_string_chars, min_len);
      values.push_back(g_->add(std::move(n)));
    } else {
      DSEEK_ASSIGN_OR_RETURN(int32_t v, value(s, ppath, 1));
      values.push_back(g_->add_seq({v, g_->add_literal(close)}));
    }
    raw.push_back(!raw_values.empty() || raw_string);
  }
  return object_node(
      props, values,
      [&](size_t j, bool) {
        return literal_("\n<｜DSML｜parameter name=\"" + props[j].key + "\" string=\"" + (raw[j] ? "true" : "false") +
                        "\">");
      },
      literal_("\n\n</｜DSML｜invoke>"), literal_("\n</｜DSML｜invoke>"));
}

Expected<int32_t> SchemaCompiler::value(const OrderedJson* schema, const std::string& path, int32_t depth) {
  if (schema == nullptr || schema->is_null()) return g_->any_at(depth);
  if (schema->is_boolean()) {
    if (schema->get<bool>()) return g_->any_at(depth);
    return Status::errorf("{}: schema false accepts no value", path);
  }
  if (!schema->is_object()) return Status::errorf("{}: expected a JSON schema object", path);
  const OrderedJson& s = *schema;
  if (s.contains("const")) return g_->add_literal(bytes_to_units(dumps(s["const"])));
  if (s.contains("enum")) {
    const OrderedJson& e = s["enum"];
    if (!e.is_array() || e.empty()) return Status::errorf("{}.enum: expected a non-empty array", path);
    std::vector<Units> cands;
    for (const OrderedJson& v : e) cands.push_back(bytes_to_units(dumps(v)));
    std::vector<int32_t> none(cands.size(), -1);
    return g_->add_choice(std::move(cands), none, none);
  }
  for (const char* key : {"anyOf", "oneOf", "allOf"}) {
    if (!s.contains(key)) continue;
    const OrderedJson& alts = s[key];
    if (!alts.is_array() || alts.empty()) return Status::errorf("{}.{}: expected a non-empty array", path, key);
    // allOf: only its first schema is enforced (merging schemas is not supported).
    const size_t n = std::string(key) == "allOf" ? 1 : alts.size();
    std::vector<int32_t> nodes;
    for (size_t i = 0; i < n; ++i) {
      DSEEK_ASSIGN_OR_RETURN(int32_t v, value(&alts[i], fmt::format("{}.{}[{}]", path, key, i), depth));
      nodes.push_back(v);
    }
    return union_of(nodes);
  }
  if (s.contains("type")) {
    const OrderedJson& t = s["type"];
    if (t.is_string()) return typed(s, t.get<std::string>(), path, depth);
    if (!t.is_array() || t.empty()) return Status::errorf("{}.type: expected a string or an array of strings", path);
    std::vector<int32_t> nodes;
    for (const OrderedJson& one : t) {
      if (!one.is_string()) return Status::errorf("{}.type: expected a string or an array of strings", path);
      DSEEK_ASSIGN_OR_RETURN(int32_t v, typed(s, one.get<std::string>(), path, depth));
      nodes.push_back(v);
    }
    return union_of(nodes);
  }
  if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties"))
    return typed(s, "object", path, depth);
  if (s.contains("items")) return typed(s, "array", path, depth);
  return g_->any_at(depth);
}

Expected<int32_t> SchemaCompiler::typed(const OrderedJson& s, const std::string& type, const std::string& path,
                                        int32_t depth) {
  if (type == "object") return object(&s, path, depth);
  if (type == "array") {
    const OrderedJson* items = s.contains("items") ? &s["items"] : nullptr;
    DSEEK_ASSIGN_OR_RETURN(int32_t item, value(items, path + ".items", depth + 1));
    DSEEK_ASSIGN_OR_RETURN(int64_t min_items, count_keyword(s, "minItems", path));
    DSEEK_ASSIGN_OR_RETURN(int64_t max_items, count_keyword(s, "maxItems", path));
    if (max_items >= 0 && min_items > max_items) return Status::errorf("{}: minItems > maxItems", path);
    Node a;
    a.kind = NodeKind::kArray;
    a.item = item;
    a.min_items = static_cast<int32_t>(std::max<int64_t>(min_items, 0));
    a.max_items = clamp_max(max_items, g_->limits.max_array_items, min_items);
    return g_->add(std::move(a));
  }
  if (type == "string") {
    DSEEK_ASSIGN_OR_RETURN(int64_t min_len, count_keyword(s, "minLength", path));
    DSEEK_ASSIGN_OR_RETURN(int64_t max_len, count_keyword(s, "maxLength", path));
    if (max_len >= 0 && min_len > max_len) return Status::errorf("{}: minLength > maxLength", path);
    Node n;
    n.kind = NodeKind::kString;
    n.min_len = static_cast<int32_t>(std::max<int64_t>(min_len, 0));
    n.max_len = clamp_max(max_len, g_->limits.max_string_chars, min_len);
    return g_->add(std::move(n));
  }
  if (type == "integer" || type == "number") {
    Node n;
    n.kind = NodeKind::kNumber;
    n.integer = type == "integer";
    for (const char* key : {"minimum", "exclusiveMinimum"})
      if (s.contains(key) && s[key].is_number() && s[key].get<double>() >= 0) n.nonneg = true;
    return g_->add(std::move(n));
  }
  if (type == "boolean") {
    return g_->add_choice({bytes_to_units("true"), bytes_to_units("false")}, {-1, -1}, {-1, -1});
  }
  if (type == "null") return g_->add_literal(bytes_to_units("null"));
  return Status::errorf("{}.type: unknown type '{}'", path, type);
}

void SchemaCompiler::first_units(int32_t node, std::vector<bool>* out) const {
  const Node& n = g_->nodes[node];
  auto set = [&](std::string_view chars) {
    for (unsigned char c : chars) (*out)[c] = true;
  };
  switch (n.kind) {
    case NodeKind::kChoice:
      for (const Units& c : n.cands)
        if (c[0] < kSymbolBase) (*out)[c[0]] = true;
      break;
    case NodeKind::kSeq:
      if (!n.children.empty()) first_units(n.children[0], out);
      break;
    case NodeKind::kString:
      if (!n.raw) set("\"");
      break;
    case NodeKind::kNumber:
      set(n.nonneg ? "0123456789" : "-0123456789");
      break;
    case NodeKind::kArray:
      set("[");
      break;
    case NodeKind::kObject:
      first_units(n.children[0], out);
      break;
    case NodeKind::kFreeObject:
      set("{");
      break;
    case NodeKind::kAny:
      set("\"-0123456789tfn");
      if (n.children[3] >= 0) set("{[");
      break;
    case NodeKind::kUnion:
      for (size_t b = 0; b < n.children.size(); ++b)
        if (n.children[b] >= 0) (*out)[b] = true;
      break;
  }
}

Expected<int32_t> SchemaCompiler::union_of(const std::vector<int32_t>& alternatives) {
  if (alternatives.size() == 1) return alternatives[0];
  // Dispatch on the first byte; where alternatives start alike, the earlier one wins (its
  // values are still valid for the union).
  std::vector<int32_t> table(256, -1);
  for (int32_t alt : alternatives) {
    std::vector<bool> first(256, false);
    first_units(alt, &first);
    for (size_t b = 0; b < 256; ++b)
      if (first[b] && table[b] < 0) table[b] = alt;
  }
  Node u;
  u.kind = NodeKind::kUnion;
  u.children = std::move(table);
  return g_->add(std::move(u));
}

bool SchemaCompiler::self_delimiting(int32_t node) const {
  const Node& n = g_->nodes[node];
  switch (n.kind) {
    case NodeKind::kObject:
    case NodeKind::kFreeObject:
    case NodeKind::kArray:
      return true;
    case NodeKind::kString:
      return !n.raw;
    case NodeKind::kSeq:
      return !n.children.empty() && self_delimiting(n.children.back());
    case NodeKind::kChoice:
      for (size_t i = 0; i < n.cands.size(); ++i) {
        if (n.conts[i] >= 0) return false;
        if (i + 1 < n.cands.size() && n.cands[i + 1].compare(0, n.cands[i].size(), n.cands[i]) == 0) return false;
      }
      return true;
    default:
      return false;
  }
}

}  // namespace dseek::serve::guided
