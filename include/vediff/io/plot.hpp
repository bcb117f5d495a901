#pragma once
// Figures drawn by gnuplot. write_figure(fig, "dir/name.png") writes three files beside each other:
//   name.csv  every point of every series, one row each, with a header row (the figure's data,
//             readable without gnuplot: panel_index, series_index, panel, series, x, y, value);
//   name.gp   the gnuplot script that draws the PNG from name.csv (kept, so the figure can be
//             restyled by hand: `gnuplot name.gp`);
//   name.png  drawn by running gnuplot on the script, with pngcairo when this gnuplot has it and
//             the libgd png terminal otherwise (the script asks gnuplot, not the build).
// Without gnuplot (Debian: gnuplot-nox) the CSV and the script are still written and the result
// carries a note saying how to draw the PNG later; a script gnuplot rejects is an io_error.
//
// Members carry {} initializers so that designated initializers may leave any of them out
// (GCC warns about omitted members without one).
//
// A figure is panels laid out in a grid (gnuplot's multiplot); a panel holds series drawn as
// points (optionally coloured by a per-point value), lines, lines with points, or steps (a
// histogram's outline, see histogram_series). Log axes and equal aspect are per panel.
//
// The CSV and the script are written atomically (atomic_file.hpp); gnuplot draws into a temporary
// that is renamed over the PNG only when it succeeded, so a failed run never leaves half a PNG.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "vediff/core/error.hpp"
#include "vediff/io/atomic_file.hpp"

namespace vediff::io {

enum class plot_style { points, lines, linespoints, steps };

struct plot_series {
    std::string name{};          // legend title, and the CSV's `series` column
    std::vector<double> x{}, y{};  // one point per index
    std::vector<double> value{}; // empty, or one per point: the points are coloured by it (palette)
    plot_style style = plot_style::points;
    double point_size = 0.5;
    double line_width = 1.5;
    std::string color{};         // a gnuplot colour ("#1f77b4", "black"); empty: gnuplot's cycle
};

struct plot_panel {
    std::string title{}, x_label{}, y_label{};
    std::vector<plot_series> series{};
    bool log_x = false, log_y = false;
    bool equal_aspect = false;   // one unit of x as long as one of y (scatters of 2-D points)
    std::optional<std::array<double, 2>> x_range{}, y_range{};  // unset: gnuplot's autoscale
    std::string value_label{};   // the colour box's label; empty: no colour box
    bool key = true;             // the legend
    std::string key_position = "top left";  // gnuplot's `set key` placement ("below", "bottom right", ...)
};

struct plot_figure {
    std::string title{};
    std::vector<plot_panel> panels{};
    int columns = 0;             // panels per row; 0: all in one row
    int panel_width = 420;       // pixels
    int panel_height = 380;
};

/// The files of a figure; `rendered` is false when there is no PNG, and `note` says why.
struct figure_files {
    std::filesystem::path png, csv, script;
    bool rendered = false;
    std::string note;
};

struct plot_options {
    std::string gnuplot = "gnuplot";  // the program: a name looked up on PATH, or a path
};

/// The executable file `name` (a path, or a name looked up on PATH), or nothing.
inline std::optional<std::filesystem::path> find_program(std::string_view name) {
    namespace fs = std::filesystem;
    const auto executable = [](const fs::path& p) {
        std::error_code ec;
        return ::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p, ec);
    };
    if (name.empty()) return std::nullopt;
    if (name.find('/') != std::string_view::npos) {
        const fs::path p(name);
        return executable(p) ? std::optional<fs::path>(p) : std::nullopt;
    }
    const char* path = std::getenv("PATH");
    std::string_view dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    while (!dirs.empty()) {
        const auto colon = dirs.find(':');
        const auto dir = dirs.substr(0, colon);
        const fs::path p = fs::path(dir.empty() ? "." : dir) / name;
        if (executable(p)) return p;
        dirs = colon == std::string_view::npos ? std::string_view{} : dirs.substr(colon + 1);
    }
    return std::nullopt;
}

/// s as one word for /bin/sh: in single quotes, each ' written as '\''.
inline std::string shell_quote(std::string_view s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

/// s as a gnuplot single-quoted string ('' stands for ', nothing else is special there).
inline std::string gnuplot_quote(std::string_view s) {
    std::string q = "'";
    for (char c : s) {
        if (c == '\n' || c == '\r') c = ' ';  // a string cannot span lines in a script
        q += c == '\'' ? std::string("''") : std::string(1, c);
    }
    return q + "'";
}

/// A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
inline std::string csv_field(std::string_view s) {
    if (s.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(s);
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
}

/// Throws std::invalid_argument naming the panel and series whose lengths disagree.
inline void check_figure(const plot_figure& fig) {
    if (fig.panels.empty()) throw std::invalid_argument(fmt::format("write_figure '{}': no panels", fig.title));
    if (fig.columns < 0 || fig.panel_width <= 0 || fig.panel_height <= 0)
        throw std::invalid_argument(fmt::format("write_figure '{}': columns {} and panel size {}x{} are invalid", fig.title,
                                                fig.columns, fig.panel_width, fig.panel_height));
    for (const auto& p : fig.panels)
        for (const auto& s : p.series)
            if (s.y.size() != s.x.size() || (!s.value.empty() && s.value.size() != s.x.size()))
                throw std::invalid_argument(fmt::format("write_figure: panel '{}', series '{}' has {} x, {} y and {} values "
                                                        "(values: none or one per point)",
                                                        p.title, s.name, s.x.size(), s.y.size(), s.value.size()));
}

/// The figure's data as CSV text: a header row, then one row per point.
inline std::string figure_csv(const plot_figure& fig) {
    check_figure(fig);
    // fmt::format, not fmt::format_to: under nvcc (the .cu programs include this), format_to's
    // constexpr path warns that long double is treated as double in device code.
    std::string out = "panel_index,series_index,panel,series,x,y,value\n";
    for (std::size_t p = 0; p < fig.panels.size(); ++p) {
        const auto panel = csv_field(fig.panels[p].title);
        for (std::size_t k = 0; k < fig.panels[p].series.size(); ++k) {
            const auto& s = fig.panels[p].series[k];
            const auto name = csv_field(s.name);
            for (std::size_t i = 0; i < s.x.size(); ++i) {
                out += fmt::format("{},{},{},{},{:.9g},{:.9g},", p, k, panel, name, s.x[i], s.y[i]);
                if (!s.value.empty()) out += fmt::format("{:.9g}", s.value[i]);
                out += '\n';
            }
        }
    }
    return out;
}

namespace detail {
inline std::string gnuplot_range(const std::optional<std::array<double, 2>>& r) {
    return r ? fmt::format("[{:.9g}:{:.9g}]", (*r)[0], (*r)[1]) : std::string("[*:*]");
}

inline std::string series_clause(std::size_t panel, std::size_t index, const plot_series& s) {
    // Rows of other series give an undefined x (NaN), which gnuplot skips.
    std::string using_ = fmt::format("using (($1=={} && $2=={}) ? $5 : NaN):6", panel, index);
    std::string with;
    const std::string color = s.color.empty() ? "" : fmt::format(" lc rgb {}", gnuplot_quote(s.color));
    switch (s.style) {
    case plot_style::points:
        if (!s.value.empty()) {
            using_ += ":7";
            with = fmt::format("points pt 7 ps {:g} lc palette", s.point_size);
        } else {
            with = fmt::format("points pt 7 ps {:g}{}", s.point_size, color);
        }
        break;
    case plot_style::lines: with = fmt::format("lines lw {:g}{}", s.line_width, color); break;
    case plot_style::linespoints: with = fmt::format("linespoints pt 7 ps {:g} lw {:g}{}", s.point_size, s.line_width, color); break;
    case plot_style::steps: with = fmt::format("steps lw {:g}{}", s.line_width, color); break;
    }
    return fmt::format("data skip 1 {} with {} title {}", using_, with, gnuplot_quote(s.name));
}
} // namespace detail

/// The gnuplot script drawing `fig` from the CSV `csv_name` into `png_name`, both in `dir`.
/// `gnuplot -e "output_path='…'" script` draws elsewhere; `-e "dir='…/'"` reads another folder.
inline std::string figure_script(const plot_figure& fig, const std::filesystem::path& dir, const std::string& csv_name,
                                 const std::string& png_name) {
    check_figure(fig);
    const int n = static_cast<int>(fig.panels.size());
    const int columns = fig.columns > 0 ? std::min(fig.columns, n) : n;
    const int rows = (n + columns - 1) / columns;
    const int title_band = fig.title.empty() ? 0 : 40;
    const int width = columns * fig.panel_width, height = rows * fig.panel_height + title_band;
    std::string dir_text = dir.string();
    if (dir_text.empty() || dir_text.back() != '/') dir_text += '/';

    std::string s;
    const auto line = [&s](const std::string& l) { s += l + '\n'; };
    const auto comment = [&line](std::string text) {  // one line: no breaks, no trailing \ continuing it
        for (char& c : text)
            if (c == '\n' || c == '\r' || c == '\\') c = ' ';
        line("# " + text);
    };
    comment("Written by vediff (io/plot.hpp). Data: " + csv_name + " (columns panel_index, series_index, panel, series, x, y, value).");
    line("if (!exists(\"dir\")) dir = " + gnuplot_quote(dir_text));
    line("if (!exists(\"output_path\")) output_path = dir." + gnuplot_quote(png_name));
    line("data = dir." + gnuplot_quote(csv_name));
    line("set datafile separator comma");
    // noenhanced: names such as "off_curve" are drawn as written, not with subscripts.
    line(fmt::format("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {{ set terminal pngcairo size {0},{1} noenhanced font ',10' }} "
                     "else {{ set terminal png size {0},{1} noenhanced }}",
                     width, height));
    line("set output output_path");
    line("set palette rgb 33,13,10");
    line(fmt::format("set multiplot layout {},{} title {}", rows, columns, gnuplot_quote(fig.title)));
    for (std::size_t p = 0; p < fig.panels.size(); ++p) {
        const auto& panel = fig.panels[p];
        comment(fmt::format("panel {}: {}", p, panel.title));
        line("set title " + gnuplot_quote(panel.title));
        line("set xlabel " + gnuplot_quote(panel.x_label));
        line("set ylabel " + gnuplot_quote(panel.y_label));
        line("unset logscale");
        // Decades as 1e-6, 1e-5, ...: gnuplot's default writes 0.000001 and the labels of a
        // wide log axis run into each other.
        line(panel.log_x ? "set logscale x; set format x '1e%L'" : "set format x '% h'");
        line(panel.log_y ? "set logscale y; set format y '1e%L'" : "set format y '% h'");
        // gnuplot cannot autoscale an axis without a single point ("x range is invalid"), so a
        // panel whose series are all empty gets fixed ranges where none were given.
        const bool no_points = std::all_of(panel.series.begin(), panel.series.end(), [](const plot_series& s) { return s.x.empty(); });
        const auto fallback = [&](const std::optional<std::array<double, 2>>& r, bool log) {
            return r || !no_points ? r : std::optional<std::array<double, 2>>(log ? std::array<double, 2>{1, 10} : std::array<double, 2>{0, 1});
        };
        line("set xrange " + detail::gnuplot_range(fallback(panel.x_range, panel.log_x)));
        line("set yrange " + detail::gnuplot_range(fallback(panel.y_range, panel.log_y)));
        line(panel.equal_aspect ? "set size ratio -1" : "set size noratio");
        line(panel.key ? "set key " + panel.key_position : "unset key");
        if (panel.value_label.empty()) line("unset colorbox");
        else line("set colorbox; set cblabel " + gnuplot_quote(panel.value_label));
        if (panel.series.empty()) {
            // A panel without series keeps its place in the layout (multiplot needs a plot there).
            line("plot NaN notitle");
            continue;
        }
        std::string plot = "plot ";
        for (std::size_t k = 0; k < panel.series.size(); ++k)
            plot += (k ? ", \\\n     " : "") + detail::series_clause(p, k, panel.series[k]);
        line(plot);
    }
    line("unset multiplot");
    return s;
}

/// A histogram of `values` in `bins` bins as a steps series: x the bins' left edges (and the
/// last right edge, repeating the last count), y the counts, or the fraction of values when
/// `normalize`. log_bins spaces the edges geometrically (for a log x axis; positive values
/// only). The range defaults to the finite values' extremes; values outside it are not counted.
inline plot_series histogram_series(std::string name, std::span<const double> values, int bins, bool log_bins = false,
                                    std::optional<std::array<double, 2>> range = std::nullopt, bool normalize = false) {
    if (bins < 1) throw std::invalid_argument(fmt::format("histogram_series '{}': {} bins, need at least 1", name, bins));
    double lo = 0, hi = 0;
    if (range) {
        lo = (*range)[0];
        hi = (*range)[1];
    } else {
        bool any = false;
        for (double v : values) {
            if (!std::isfinite(v) || (log_bins && !(v > 0))) continue;
            lo = any ? std::min(lo, v) : v;
            hi = any ? std::max(hi, v) : v;
            any = true;
        }
        if (!any) throw std::invalid_argument(fmt::format("histogram_series '{}': no finite{} values", name, log_bins ? " positive" : ""));
    }
    if (log_bins && !(lo > 0))
        throw std::invalid_argument(fmt::format("histogram_series '{}': log bins need a positive range, got [{}, {}]", name, lo, hi));
    if (!(hi >= lo))
        throw std::invalid_argument(fmt::format("histogram_series '{}': range [{}, {}] is empty", name, lo, hi));
    if (hi == lo) {  // every value the same: one bin around it
        const double pad = lo != 0 ? std::abs(lo) * 0.05 : 0.5;
        lo = log_bins ? lo / 1.05 : lo - pad;
        hi = log_bins ? hi * 1.05 : hi + pad;
    }
    const auto to_axis = [&](double v) { return log_bins ? std::log(v) : v; };
    const auto from_axis = [&](double u) { return log_bins ? std::exp(u) : u; };
    const double a = to_axis(lo), b = to_axis(hi);
    std::vector<double> counts(static_cast<std::size_t>(bins), 0.0);
    double counted = 0;
    for (double v : values) {
        if (!std::isfinite(v) || v < lo || v > hi || (log_bins && !(v > 0))) continue;
        auto k = static_cast<std::int64_t>((to_axis(v) - a) * bins / (b - a));
        k = std::clamp<std::int64_t>(k, 0, bins - 1);  // v == hi falls in the last bin
        counts[static_cast<std::size_t>(k)] += 1;
        counted += 1;
    }
    plot_series s;
    s.name = std::move(name);
    s.style = plot_style::steps;
    for (int k = 0; k <= bins; ++k) {
        s.x.push_back(from_axis(a + (b - a) * k / bins));
        const double c = counts[static_cast<std::size_t>(std::min(k, bins - 1))];
        s.y.push_back(normalize && counted > 0 ? c / counted : c);
    }
    return s;
}

/// Writes `png`'s CSV and script beside it and draws it with gnuplot (see the top of this file).
inline figure_files write_figure(const plot_figure& fig, const std::filesystem::path& png, const plot_options& opt = {}) {
    namespace fs = std::filesystem;
    if (png.filename().empty() || png.extension() != ".png")
        throw std::invalid_argument(fmt::format("write_figure: '{}' is not a .png file name", png.string()));
    figure_files files;
    files.png = png;
    files.csv = fs::path(png).replace_extension(".csv");
    files.script = fs::path(png).replace_extension(".gp");
    const fs::path dir = fs::absolute(png).parent_path();
    fs::create_directories(dir);

    const auto csv = figure_csv(fig);
    const auto script = figure_script(fig, dir, files.csv.filename().string(), png.filename().string());
    write_file_atomically(files.csv, [&](atomic_file& f) { f.write(csv); });
    write_file_atomically(files.script, [&](atomic_file& f) { f.write(script); });

    const auto gnuplot = find_program(opt.gnuplot);
    if (!gnuplot) {
        files.note = fmt::format("write_figure: {} is not installed (Debian: apt-get install gnuplot-nox); wrote {} and {}; "
                                 "draw {} later with: gnuplot {}",
                                 opt.gnuplot, files.csv.string(), files.script.string(), png.string(), shell_quote(files.script.string()));
        return files;
    }
    const std::string suffix = ".tmp." + std::to_string(::getpid());
    remove_stale_temporaries(png, ".tmp.");  // of a drawing killed before its rename
    remove_stale_temporaries(dir / (png.filename().string() + ".gnuplot-log"), ".tmp.");
    const fs::path temp_png = dir / (png.filename().string() + suffix);
    const fs::path log = dir / (png.filename().string() + ".gnuplot-log" + suffix);
    const std::string command = fmt::format("{} -e {} {} >{} 2>&1", shell_quote(gnuplot->string()),
                                            shell_quote("output_path = " + gnuplot_quote(temp_png.string())),
                                            shell_quote(fs::absolute(files.script).string()), shell_quote(log.string()));
    const int status = std::system(command.c_str());
    std::string messages;
    {
        std::ifstream in(log);
        messages.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::error_code ignored;
    fs::remove(log, ignored);
    const bool ok = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && fs::exists(temp_png) &&
                    fs::file_size(temp_png) > 0;
    if (!ok) {
        fs::remove(temp_png, ignored);
        throw io_error(fmt::format("write_figure: gnuplot failed on {} (status {}): {}", files.script.string(), status, messages));
    }
    fs::rename(temp_png, png);
    files.rendered = true;
    return files;
}

} // namespace vediff::io
