#include <sched.h>

#include <cerrno>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "base/error.hpp"
#include "netns/names.hpp"
#include "netns/netns.hpp"

namespace labctl::netns {

using namespace detail;

namespace detail {

void run_on_thread_in(int fd, const std::function<void()>& fn) {
    std::exception_ptr failure;
    std::thread worker([&] {
        try {
            if (::setns(fd, CLONE_NEWNET) != 0) throw_last_errno("setns into network namespace");
            fn();
        } catch (...) {
            failure = std::current_exception();
        }
    });
    worker.join();
    if (failure) std::rethrow_exception(failure);
}

}  // namespace detail

void run_in_each(const std::vector<const NetnsHandle*>& namespaces, const std::function<void(std::size_t)>& fn) {
    std::exception_ptr failure;
    std::thread worker([&] {
        try {
            for (std::size_t i = 0; i < namespaces.size(); ++i) {
                const NetnsHandle& ns = *namespaces[i];
                if (::setns(ns.fd.get(), CLONE_NEWNET) != 0)
                    throw_last_errno(ns.name.empty() ? std::string("setns") : what(ns.name) + ": setns");
                fn(i);
            }
        } catch (...) {
            failure = std::current_exception();
        }
    });
    worker.join();
    if (failure) std::rethrow_exception(failure);
}

NetnsWorker::NetnsWorker(const NetnsHandle& ns) {
    std::exception_ptr failure;
    bool started = false;
    // `failure` and `started` live in this constructor: the thread touches them only
    // until it has reported, under the lock.
    thread_ = std::thread([this, fd = ns.fd.get(), name = ns.name, &failure, &started] {
        bool joined = ::setns(fd, CLONE_NEWNET) == 0;
        const int err = errno;
        {
            std::lock_guard lock(mutex_);
            if (!joined)
                failure = std::make_exception_ptr(
                    KernelError(err, name.empty() ? std::string("setns") : what(name) + ": setns"));
            started = true;
            finished_.notify_all();
        }
        if (joined) loop();
    });
    std::unique_lock lock(mutex_);
    finished_.wait(lock, [&] { return started; });
    if (failure) {
        lock.unlock();
        thread_.join();
        std::rethrow_exception(failure);
    }
}

NetnsWorker::~NetnsWorker() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void NetnsWorker::loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stop_ and nothing left
        Job* job = jobs_.front();
        jobs_.pop_front();
        lock.unlock();
        try {
            (*job->fn)();
        } catch (...) {
            job->failure = std::current_exception();
        }
        lock.lock();
        job->done = true;
        finished_.notify_all();
    }
}

void NetnsWorker::run_job(const std::function<void()>& fn) {
    Job job{&fn, nullptr, false};
    std::unique_lock lock(mutex_);
    jobs_.push_back(&job);
    wake_.notify_one();
    finished_.wait(lock, [&] { return job.done; });
    if (job.failure) std::rethrow_exception(job.failure);
}

}  // namespace labctl::netns
