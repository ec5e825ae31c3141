#include "services/router/redis_conversation_store.h"

#include <openssl/evp.h>

#include <charconv>
#include <utility>

namespace anima::router {

namespace {

constexpr size_t kMaxRawKeyPart = 128;

// KEYS[1]: the conversation. ARGV: the encoded turn, max turns, max bytes of the turns' text,
// idle age in ms. A turn's size is its element's length minus the "<n>:" header, the same
// measure as the in-process store's. Answers how many turns are kept.
constexpr const char* kAppendScript = R"lua(
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
local max_turns = tonumber(ARGV[2])
if n > max_turns then
  redis.call('LTRIM', KEYS[1], n - max_turns, -1)
end
local turns = redis.call('LRANGE', KEYS[1], 0, -1)
local sizes, total = {}, 0
for i, t in ipairs(turns) do
  local colon = string.find(t, ':', 1, true) or 0
  sizes[i] = #t - colon
  total = total + sizes[i]
end
local limit, drop = tonumber(ARGV[3]), 0
while total > limit and drop < #turns do
  drop = drop + 1
  total = total - sizes[drop]
end
if drop == #turns then
  redis.call('DEL', KEYS[1])
  return 0
end
if drop > 0 then
  redis.call('LTRIM', KEYS[1], drop, -1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return #turns - drop
)lua";

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

// Parses one stored turn into the two messages; false for an element this store did not write.
bool DecodeTurn(const std::string& element, ChatHistory* out) {
  size_t colon = element.find(':');
  if (colon == std::string::npos || colon == 0 || colon > 10) return false;
  size_t user_size = 0;
  auto [end, ec] = std::from_chars(element.data(), element.data() + colon, user_size);
  if (ec != std::errc() || end != element.data() + colon) return false;
  std::string_view rest = std::string_view(element).substr(colon + 1);
  if (user_size > rest.size()) return false;
  auto* user = out->Add();
  user->set_role("user");
  user->set_content(std::string(rest.substr(0, user_size)));
  auto* assistant = out->Add();
  assistant->set_role("assistant");
  assistant->set_content(std::string(rest.substr(user_size)));
  return true;
}

}  // namespace

RedisConversationStore::RedisConversationStore(store::RedisClient* client, MemoryLimits limits)
    : client_(client), limits_(limits), append_(kAppendScript) {}

std::string RedisConversationStore::EscapeKeyPart(std::string_view part) {
  if (part.size() > kMaxRawKeyPart) return "#" + Sha256Hex(part);
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(part.size());
  for (char ch : part) {
    auto c = static_cast<unsigned char>(ch);
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-' || c == '@';
    if (plain) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

std::string RedisConversationStore::KeyOf(const ConversationKey& key) {
  return "anima:conv:{" + EscapeKeyPart(key.principal) + "}:" + EscapeKeyPart(key.id);
}

void RedisConversationStore::History(const ConversationKey& key, HistoryCallback done) {
  if (key.id.empty() || limits_.max_turns == 0) {
    done(ChatHistory());
    return;
  }
  client_->Command("memory_history",
                   {"LRANGE", KeyOf(key), "-" + std::to_string(limits_.max_turns), "-1"},
                   [done = std::move(done)](absl::StatusOr<store::RedisReply> reply) {
                     if (!reply.ok()) return done(reply.status());
                     ChatHistory history;
                     for (const auto& element : reply->elements) {
                       // A foreign element (someone else wrote the key) is skipped, not fatal.
                       DecodeTurn(element.str, &history);
                     }
                     done(std::move(history));
                   });
}

void RedisConversationStore::Append(const ConversationKey& key, std::string_view user,
                                    std::string_view assistant, AppendCallback done) {
  if (key.id.empty() || limits_.max_turns == 0) {
    if (done) done(absl::OkStatus());
    return;
  }
  std::string capped_user = CapMessage(user, limits_.max_message_bytes);
  std::string turn = std::to_string(capped_user.size()) + ":";
  turn += capped_user;
  turn += CapMessage(assistant, limits_.max_message_bytes);
  client_->Eval("memory_append", append_, {KeyOf(key)},
                {std::move(turn), std::to_string(limits_.max_turns),
                 std::to_string(limits_.max_conversation_bytes),
                 std::to_string(std::max<int64_t>(1, limits_.max_age.count()))},
                [done = std::move(done)](absl::StatusOr<store::RedisReply> reply) {
                  if (done) done(reply.status());
                });
}

store::BackendStatus RedisConversationStore::status() const { return client_->status(); }

}  // namespace anima::router
