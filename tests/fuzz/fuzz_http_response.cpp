// libFuzzer target: what an instance answers to a health probe, through the
// same exchange HttpProbe and HttpsProbe run (Beast's parser with our header and
// body limits). The input is everything the server sends before closing; the
// exchange must end, with a verdict and a detail, and must never crash.
#include <rollout/http_probe.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  boost::asio::io_context io;
  boost::beast::test::stream client(io);
  boost::beast::test::stream server(io);
  client.connect(server);  // the probe's request goes to `server`, and is not looked at
  client.append(std::string_view(reinterpret_cast<const char*>(data), size));
  client.close_remote();  // the server sends the input, then closes: the exchange cannot wait forever
  rollout::HttpProbeOptions opts;
  opts.body_limit = 4096;
  opts.header_limit = 1024;
  opts.body_contains = "ok";
  // Both outlive the coroutine, which holds them by reference.
  const std::string request = rollout::detail::http_request(opts, rollout::Endpoint("127.0.0.1", 8080));
  boost::beast::flat_buffer buffer;
  bool done = false;
  rollout::detail::HttpExchange out;
  boost::asio::co_spawn(io, rollout::detail::http_exchange(client, opts, request, buffer),
                        [&](std::exception_ptr e, rollout::detail::HttpExchange x) {
                          if (e) std::abort();  // a malformed response is a failed probe, never an exception
                          out = std::move(x);
                          done = true;
                        });
  io.run();
  if (!done) std::abort();
  if (out.result.detail.empty()) std::abort();
  if (out.result.healthy && out.stale) std::abort();
  return 0;
}
