#pragma once
// What the benchmarks share: the PyTorch peer process they run in the same invocation, the
// measurements of a side (step times, peak memory, faults), and the machine's load while they ran.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

namespace vediff::bench {

using clock_type = std::chrono::steady_clock;

inline rusage self_usage() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u;
}

/// A field of /proc/self/status in KiB ("VmRSS:", "VmHWM:"), or −1.
inline long proc_status_kib(const std::string& field) {
    std::ifstream f("/proc/self/status");
    std::string key;
    long value = -1;
    while (f >> key) {
        if (key == field) {
            f >> value;
            return value;
        }
        f.ignore(1 << 20, '\n');
    }
    return -1;
}

/// The kernel's own high-water mark of this address space (VmHWM), as a cross-check of ru_maxrss.
inline long vm_hwm_kib() { return proc_status_kib("VmHWM:"); }

inline std::string load_average() {
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return fmt::format("{} {} {}", a, b, c);
}

/// Clock ticks: the machine's total and busy time (/proc/stat), and the CPU time of this process
/// and of the peer (/proc/PID/stat), to tell how much of the machine other processes took.
struct cpu_ticks {
    long long total = 0, busy = 0, ours = 0;
};

inline long long process_ticks(pid_t pid) {
    std::ifstream f(pid ? fmt::format("/proc/{}/stat", pid) : std::string("/proc/self/stat"));
    std::string line;
    std::getline(f, line);
    const auto close = line.rfind(')');  // the command name may contain spaces
    if (close == std::string::npos) return 0;
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15: utime, stime
        if (i == 14) utime = std::atoll(field.c_str());
        if (i == 15) stime = std::atoll(field.c_str());
    }
    return utime + stime;
}

inline cpu_ticks read_ticks(pid_t peer) {
    cpu_ticks t;
    std::ifstream f("/proc/stat");
    std::string cpu;
    f >> cpu;
    long long v[8] = {};
    for (auto& x : v) f >> x;  // user nice system idle iowait irq softirq steal
    for (auto x : v) t.total += x;
    t.busy = t.total - v[3] - v[4];
    t.ours = process_ticks(0) + (peer > 0 ? process_ticks(peer) : 0);
    return t;
}

inline double median(std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/// Idle OpenMP workers spin before they sleep; each library gets the machine to itself.
inline void pause_between_libraries() { std::this_thread::sleep_for(std::chrono::milliseconds(400)); }

struct measurement {
    std::vector<double> step_ms;
    double loss = 0;
    long rss_baseline_kib = 0, peak_rss_kib = 0, vm_hwm_kib = 0;
    double faults_per_step = 0;  // minor page faults per timed step
    std::int64_t parameters = 0;
    bool ok = false;

    double median_ms() const { return median(step_ms); }
    double min_ms() const { return step_ms.empty() ? 0.0 : *std::min_element(step_ms.begin(), step_ms.end()); }
};

/// A PyTorch peer script (torch_*.py) as a child process that runs one step per command: "w" (warm-up) or
/// "s" (timed) answers "step_ms MS KEY VALUE", "q" prints a closing report ending in "end".
class torch_peer {
public:
    torch_peer() = default;
    torch_peer(const torch_peer&) = delete;
    torch_peer& operator=(const torch_peer&) = delete;
    ~torch_peer() { stop(); }

    /// Starts the script and reads its header up to "ready"; false when that fails.
    bool start(const std::vector<std::string>& args) {
        int to_child[2], from_child[2];
        if (pipe(to_child) != 0) return false;
        if (pipe(from_child) != 0) {
            ::close(to_child[0]);
            ::close(to_child[1]);
            return false;
        }
        pid_ = fork();
        if (pid_ < 0) return false;
        if (pid_ == 0) {
            dup2(to_child[0], STDIN_FILENO);
            dup2(from_child[1], STDOUT_FILENO);
            for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) ::close(fd);
            std::vector<char*> argv;
            for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
        ::close(to_child[0]);
        ::close(from_child[1]);
        to_ = fdopen(to_child[1], "w");
        from_ = fdopen(from_child[0], "r");
        if (!to_ || !from_) return false;
        return read_until("ready", header_);
    }

    /// One step ("w" warm-up or "s" timed); its milliseconds and reported value (the loss, or
    /// images/s), or nothing on failure.
    std::optional<std::pair<double, double>> step(bool timed) {
        if (!to_ || std::fprintf(to_, "%s\n", timed ? "s" : "w") < 0 || std::fflush(to_) != 0) return std::nullopt;
        char line[256];
        double ms, value;
        if (!std::fgets(line, sizeof line, from_) || std::sscanf(line, "step_ms %lf %*s %lf", &ms, &value) != 2)
            return std::nullopt;
        return std::pair{ms, value};
    }

    /// Ends the peer; its closing report (peak memory, faults), empty on failure.
    std::map<std::string, double> finish() {
        std::map<std::string, double> out;
        if (!to_) return out;
        std::fprintf(to_, "q\n");
        std::fflush(to_);
        if (!read_until("end", out)) out.clear();
        stop();
        return out;
    }

    const std::map<std::string, double>& header() const { return header_; }
    pid_t pid() const { return pid_; }

private:
    bool read_until(const char* marker, std::map<std::string, double>& values) {
        char line[256], key[64];
        double value;
        while (std::fgets(line, sizeof line, from_)) {
            if (std::strncmp(line, marker, std::strlen(marker)) == 0) return true;
            if (std::sscanf(line, "%63s %lf", key, &value) == 2) values[key] = value;
        }
        return false;
    }
    void stop() {
        if (to_) std::fclose(to_);
        if (from_) std::fclose(from_);
        to_ = from_ = nullptr;
        if (pid_ > 0) waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    pid_t pid_ = -1;
    FILE* to_ = nullptr;
    FILE* from_ = nullptr;
    std::map<std::string, double> header_;
};

/// One turn of the two libraries: our step (ours_step() returns {ms, loss}), a pause, the peer's
/// step, a pause. A peer that stops answering is marked not ok and skipped from then on.
/// One step of the peer, recorded in `theirs` (a peer that stops answering is marked not ok).
inline void peer_step(torch_peer& peer, measurement& theirs, bool timed) {
    if (!theirs.ok) return;
    if (const auto r = peer.step(timed)) {
        if (timed) theirs.step_ms.push_back(r->first);
        theirs.loss = r->second;
    } else {
        theirs.ok = false;
        fmt::print("torch: the peer stopped answering\n");
    }
}

template <class OursStep>
void take_turn(OursStep&& ours_step, measurement& ours, torch_peer& peer, measurement& theirs, bool timed) {
    const auto [ms, loss] = ours_step();
    if (timed) ours.step_ms.push_back(ms);
    ours.loss = loss;
    if (!theirs.ok) return;
    pause_between_libraries();
    peer_step(peer, theirs, timed);
    pause_between_libraries();
}

inline double mib(long kib) { return double(kib) / 1024.0; }

} // namespace vediff::bench
