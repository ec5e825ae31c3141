// The official openai npm client (v4, maxRetries 0) against the gateway: a completion, then a
// principal over its requests_per_minute gets RateLimitError (429) with OpenAI's headers, and
// a principal over its token budget gets insufficient_quota. Run by openai_sdk_test.sh.
import OpenAI from "openai";

const [baseURL, limitedKey, budgetKey] = process.argv.slice(2);
let passed = 0;
let failed = 0;
function check(ok, what) {
  console.log(`${ok ? "ok" : "FAIL"}: ${what}`);
  if (ok) passed++;
  else failed++;
}

const limited = new OpenAI({ baseURL, apiKey: limitedKey, maxRetries: 0 });
const messages = [{ role: "user", content: "Hello, consciousness system!" }];

const { data: first, response } = await limited.chat.completions
  .create({ model: "auto", messages })
  .withResponse();
check(first.choices[0].message.content.length > 0, "a completion through the SDK");
check(response.headers.get("x-ratelimit-limit-requests") === "2", "x-ratelimit-limit-requests 2");
check(response.headers.get("x-ratelimit-remaining-requests") === "1",
      "x-ratelimit-remaining-requests 1");
check(/^\d+(\.\d+)?(ms|s)$|^\d+m\d+(\.\d+)?s$/.test(response.headers.get("x-ratelimit-reset-requests") ?? ""),
      `x-ratelimit-reset-requests as OpenAI writes it (${response.headers.get("x-ratelimit-reset-requests")})`);
await limited.chat.completions.create({ model: "auto", messages });

try {
  await limited.chat.completions.create({ model: "auto", messages });
  check(false, "the third request of the minute is refused");
} catch (e) {
  check(e instanceof OpenAI.RateLimitError, `RateLimitError (${e.constructor.name})`);
  check(e.status === 429, "status 429");
  check(e.code === "rate_limit_exceeded", `code rate_limit_exceeded (${e.code})`);
  check(e.param === "requests_per_minute", `param names the limit (${e.param})`);
  check(e.headers["x-ratelimit-remaining-requests"] === "0", "remaining-requests 0 on the 429");
  check(Number(e.headers["retry-after"]) >= 1, `retry-after (${e.headers["retry-after"]})`);
  check(Number(e.headers["retry-after-ms"]) > 0, `retry-after-ms (${e.headers["retry-after-ms"]})`);
}

const budget = new OpenAI({ baseURL, apiKey: budgetKey, maxRetries: 0 });
await budget.chat.completions.create({ model: "auto", messages });
try {
  await budget.chat.completions.create({ model: "auto", messages });
  check(false, "a request over tokens_per_day is refused");
} catch (e) {
  check(e instanceof OpenAI.RateLimitError, `RateLimitError for a budget (${e.constructor.name})`);
  check(e.code === "insufficient_quota", `code insufficient_quota (${e.code})`);
}

const wrong = new OpenAI({ baseURL, apiKey: "not-a-key", maxRetries: 0 });
try {
  await wrong.models.list();
  check(false, "a wrong key is refused");
} catch (e) {
  check(e instanceof OpenAI.AuthenticationError, `AuthenticationError (${e.constructor.name})`);
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
