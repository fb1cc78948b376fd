#pragma once

// Runs one coroutine on an io_context until it completes, and returns its value
// (or rethrows its exception). It stops as soon as that coroutine is done rather
// than at io.run()'s "no more work": a child process's exit monitor, or a server
// on the same io_context, is work that stays pending for as long as it lives.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <exception>
#include <optional>
#include <utility>

namespace rollout::test_support {

template <class T>
T run(boost::asio::io_context& io, boost::asio::awaitable<T> aw) {
  std::optional<T> out;
  std::exception_ptr err;
  bool done = false;
  boost::asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e, T v) {
    done = true;
    err = e;
    if (!e) out.emplace(std::move(v));
  });
  io.restart();
  while (!done) io.run_one();
  if (err) std::rethrow_exception(err);
  return std::move(*out);
}

inline void run(boost::asio::io_context& io, boost::asio::awaitable<void> aw) {
  std::exception_ptr err;
  bool done = false;
  boost::asio::co_spawn(io, std::move(aw), [&](std::exception_ptr e) {
    done = true;
    err = e;
  });
  io.restart();
  while (!done) io.run_one();
  if (err) std::rethrow_exception(err);
}

}  // namespace rollout::test_support
