#pragma once

// TLS for tests: a CA and a server certificate for 127.0.0.1 / localhost made with
// the openssl CLI in a temp dir, and a TLS server answering 200 "ok" to one request
// per connection (recording POSTed bodies).

#include "support/temp_dir.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace rollout::test_support {

namespace tls_detail {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;

/// A CA and a server certificate for 127.0.0.1 / localhost, made with the openssl CLI.
struct TestPki {
  test_support::TempDir dir;
  std::string ca() const { return (dir.path() / "ca.pem").string(); }
  std::string cert() const { return (dir.path() / "server.pem").string(); }
  std::string key() const { return (dir.path() / "server.key").string(); }
  TestPki() {
    const auto d = dir.path().string();
    const std::string script = fmt::format(
        "cd {0} && "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj '/CN=rollout test CA' && "
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1' && "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext",
        d);
    if (std::system((script + " >/dev/null 2>&1").c_str()) != 0) throw std::runtime_error("openssl could not make the test PKI");
  }
};

/// A one-shot TLS server answering 200 "ok" to one request per connection.
struct TlsServer {
  asio::io_context& io;
  asio::ssl::context ctx{asio::ssl::context::tls_server};
  asio::ip::tcp::acceptor acceptor;
  TlsServer(asio::io_context& io, const TestPki& pki) : io(io), acceptor(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    ctx.use_certificate_chain_file(pki.cert());
    ctx.use_private_key_file(pki.key(), asio::ssl::context::pem);
    asio::co_spawn(io, serve(), [](std::exception_ptr) {});
  }
  std::uint16_t port() const { return acceptor.local_endpoint().port(); }
  std::vector<std::string> bodies;        // requests' bodies, in order
  std::vector<std::string> server_names;  // each request's TLS server name (SNI), "" if the client sent none
  std::vector<std::string> hosts;         // each request's Host header
  void stop() { acceptor.close(); }
  asio::awaitable<void> serve() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      beast::ssl_stream<beast::tcp_stream> s(beast::tcp_stream(std::move(socket)), ctx);
      s.next_layer().expires_after(5s);
      auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
      if (hec) continue;  // the client refused our certificate: that is what the test checks
      beast::flat_buffer b;
      http::request<http::string_body> req;
      auto [rec, rn] = co_await http::async_read(s, b, req, asio::as_tuple(asio::use_awaitable));
      if (rec) continue;
      bodies.push_back(req.body());
      const char* sni = SSL_get_servername(s.native_handle(), TLSEXT_NAMETYPE_host_name);
      server_names.emplace_back(sni ? sni : "");
      hosts.emplace_back(req[http::field::host]);
      http::response<http::string_body> res{http::status::ok, 11};
      res.body() = "ok";
      res.keep_alive(false);
      res.prepare_payload();
      co_await http::async_write(s, res, asio::as_tuple(asio::use_awaitable));
    }
  }
};


}  // namespace tls_detail

using tls_detail::TestPki;
using tls_detail::TlsServer;

}  // namespace rollout::test_support
