// Chat request parsing and Python-compatible JSON printing (see chat_types.h).
#include "tokenizer/chat_types.h"

#include <cmath>

namespace dseek::tokenizer {
namespace {

Expected<std::optional<std::string>> opt_string(const OrderedJson& m, const char* key,
                                                const std::string& where) {
  if (!m.contains(key) || m[key].is_null()) return std::optional<std::string>();
  const OrderedJson& v = m[key];
  if (v.is_string()) return std::optional<std::string>(v.get<std::string>());
  // OpenAI content parts: [{"type": "text", "text": ...}, ...] are joined.
  if (v.is_array()) {
    std::string s;
    for (const auto& part : v) {
      if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
          !part["text"].is_string())
        return Status::errorf("{}.{}: only text parts are supported", where, key);
      s += part["text"].get<std::string>();
    }
    return std::optional<std::string>(s);
  }
  return Status::errorf("{}.{}: expected a string or null", where, key);
}

void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += static_cast<char>(c);
    }
  }
  out += '"';
}

void dump(std::string& out, const OrderedJson& v) {
  switch (v.type()) {
    case OrderedJson::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        dump_string(out, it.key());
        out += ": ";
        dump(out, it.value());
      }
      out += '}';
      break;
    }
    case OrderedJson::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        dump(out, v[i]);
      }
      out += ']';
      break;
    }
    case OrderedJson::value_t::string: dump_string(out, v.get_ref<const std::string&>()); break;
    case OrderedJson::value_t::number_float: {
      double d = v.get<double>();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d > 0 ? "Infinity" : "-Infinity";
      else {
        std::string s = v.dump();  // shortest round-trip digits, like Python's repr
        if (s.find_first_of(".eE") == std::string::npos) s += ".0";
        out += s;
      }
      break;
    }
    default: out += v.dump(); break;  // null, booleans, integers
  }
}

}  // namespace

std::string python_json_dumps(const OrderedJson& v) {
  std::string out;
  dump(out, v);
  return out;
}

namespace {
Expected<ChatRequest> chat_request_from_json_unchecked(const OrderedJson& j);
}  // namespace

Expected<ChatRequest> chat_request_from_json(const OrderedJson& j) {
  // A field of an unexpected JSON type that the checks below do not catch (nlohmann's
  // value()/get() throw) is still a one-line error, never an exception out of here.
  try {
    return chat_request_from_json_unchecked(j);
  } catch (const nlohmann::json::exception& e) {
    return Status::errorf("unexpected JSON value: {}", e.what());
  }
}

namespace {
Expected<ChatRequest> chat_request_from_json_unchecked(const OrderedJson& j) {
  ChatRequest req;
  const OrderedJson* msgs = &j;
  if (j.is_object()) {
    if (!j.contains("messages") || !j["messages"].is_array())
      return Status::error("\"messages\" must be an array");
    msgs = &j["messages"];
    if (j.contains("tools") && !j["tools"].is_null()) {
      if (!j["tools"].is_array()) return Status::error("\"tools\" must be an array");
      req.tools = j["tools"];
    }
    for (const char* key : {"add_generation_prompt", "thinking"}) {
      if (j.contains(key) && !j[key].is_boolean()) return Status::errorf("\"{}\" must be a boolean", key);
    }
    req.add_generation_prompt = j.value("add_generation_prompt", true);
    req.thinking = j.value("thinking", false);
    if (j.contains("thinking_mode")) req.thinking = j["thinking_mode"] == "thinking";
  } else if (!j.is_array()) {
    return Status::error("expected a message array or an object with \"messages\"");
  }
  for (size_t i = 0; i < msgs->size(); ++i) {
    const OrderedJson& m = (*msgs)[i];
    std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) return Status::errorf("{}: must be an object", where);
    if (!m.contains("role") || !m["role"].is_string())
      return Status::errorf("{}.role: must be a string", where);
    ChatMessage msg;
    msg.role = m["role"].get<std::string>();
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" &&
        msg.role != "tool" && msg.role != "developer")
      return Status::errorf("{}.role: unknown role '{}'", where, msg.role);
    DSEEK_ASSIGN_OR_RETURN(msg.content, opt_string(m, "content", where));
    DSEEK_ASSIGN_OR_RETURN(msg.reasoning_content, opt_string(m, "reasoning_content", where));
    if (m.contains("tool_call_id") && m["tool_call_id"].is_string())
      msg.tool_call_id = m["tool_call_id"].get<std::string>();
    if (m.contains("prefix") && m["prefix"].is_boolean()) msg.prefix = m["prefix"].get<bool>();
    if (m.contains("tools") && m["tools"].is_array()) msg.tools = m["tools"];
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) return Status::errorf("{}.tool_calls: must be an array", where);
      std::vector<ToolCall> calls;
      for (size_t k = 0; k < m["tool_calls"].size(); ++k) {
        const OrderedJson& c = m["tool_calls"][k];
        std::string cw = fmt::format("{}.tool_calls[{}]", where, k);
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object())
          return Status::errorf("{}: needs a \"function\" object", cw);
        const OrderedJson& f = c["function"];
        if (!f.contains("name") || !f["name"].is_string())
          return Status::errorf("{}.function.name: must be a string", cw);
        ToolCall call;
        call.name = f["name"].get<std::string>();
        if (c.contains("id") && c["id"].is_string()) call.id = c["id"].get<std::string>();
        if (c.contains("type") && c["type"].is_string()) call.type = c["type"].get<std::string>();
        if (!f.contains("arguments") || f["arguments"].is_null()) call.arguments = "{}";
        else if (f["arguments"].is_string()) call.arguments = f["arguments"].get<std::string>();
        else call.arguments = python_json_dumps(f["arguments"]);
        calls.push_back(std::move(call));
      }
      msg.tool_calls = std::move(calls);
    }
    req.messages.push_back(std::move(msg));
  }
  return req;
}
}  // namespace

}  // namespace dseek::tokenizer
