#define BOOST_TEST_MODULE plot
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vediff/io/plot.hpp"
#include "support/scratch_dir.hpp"

// Without the cpu backend (support/errors.hpp pulls it in): this test only needs the plot header.
using namespace vediff;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// Two panels: a coloured scatter with a plain series (names with a comma and a quote), and a
/// log-x panel with lines and a histogram.
io::plot_figure sample_figure() {
    io::plot_figure fig;
    fig.title = "a 'quoted' title";
    io::plot_panel scatter{.title = "scatter, coloured", .x_label = "x", .y_label = "y", .equal_aspect = true, .value_label = "t"};
    scatter.series.push_back({.name = "points", .x = {0, 1, 2}, .y = {0, 1, 0.5}, .value = {0.1, 0.5, 0.9}});
    scatter.series.push_back({.name = "say \"hi\"", .x = {0.5}, .y = {2}, .style = io::plot_style::linespoints});
    io::plot_panel lines{.title = "log x", .x_label = "noise scale", .y_label = "PSNR", .log_x = true};
    lines.series.push_back({.name = "KL", .x = {0.01, 0.1, 1}, .y = {30, 25, 12}, .style = io::plot_style::lines});
    lines.series.push_back(io::histogram_series("hist", std::vector<double>{0.02, 0.05, 0.5}, 2, true));
    fig.panels = {scatter, lines};
    return fig;
}

std::optional<fs::path> gnuplot() { return io::find_program("gnuplot"); }

} // namespace

BOOST_AUTO_TEST_CASE(quoting) {
    BOOST_TEST(io::shell_quote("a b") == "'a b'");
    BOOST_TEST(io::shell_quote("it's") == "'it'\\''s'");
    BOOST_TEST(io::gnuplot_quote("it's") == "'it''s'");
    BOOST_TEST(io::csv_field("plain") == "plain");
    BOOST_TEST(io::csv_field("a,b") == "\"a,b\"");
    BOOST_TEST(io::csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
}

BOOST_AUTO_TEST_CASE(find_program_uses_path) {
    BOOST_TEST(io::find_program("sh").has_value());
    BOOST_TEST(!io::find_program("vediff-no-such-program").has_value());
    BOOST_TEST(!io::find_program("/nonexistent/gnuplot").has_value());
}

BOOST_AUTO_TEST_CASE(histogram_counts_and_edges) {
    // Bins [0, 1), [1, 2), [2, 3]: the right end belongs to the last bin; 5 is outside the range.
    const std::vector<double> v{1, 2, 2, 3, 3, 3, 5};
    const auto h = io::histogram_series("h", v, 3, false, std::array<double, 2>{0, 3});
    BOOST_TEST(h.x == (std::vector<double>{0, 1, 2, 3}), boost::test_tools::per_element());
    BOOST_TEST(h.y == (std::vector<double>{0, 1, 5, 5}), boost::test_tools::per_element());
    BOOST_TEST((h.style == io::plot_style::steps));
    const auto fractions = io::histogram_series("f", v, 3, false, std::array<double, 2>{0, 3}, true);
    BOOST_TEST(fractions.y[2] == 5.0 / 6.0, boost::test_tools::tolerance(1e-12));

    // Geometric bins over [1, 1000]: one value in the middle of each decade.
    const auto g = io::histogram_series("g", std::vector<double>{2, 30, 400}, 3, true, std::array<double, 2>{1, 1000});
    const std::vector<double> edges{1, 10, 100, 1000};
    for (std::size_t k = 0; k < edges.size(); ++k) BOOST_TEST(g.x[k] == edges[k], boost::test_tools::tolerance(1e-9));
    BOOST_TEST(g.y == (std::vector<double>{1, 1, 1, 1}), boost::test_tools::per_element());

    BOOST_CHECK_THROW(io::histogram_series("bad", v, 0), std::invalid_argument);
    BOOST_CHECK_THROW(io::histogram_series("bad", std::vector<double>{-1, 0}, 3, true), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(csv_holds_every_point) {
    const auto csv = io::figure_csv(sample_figure());
    const std::string expected =
        "panel_index,series_index,panel,series,x,y,value\n"
        "0,0,\"scatter, coloured\",points,0,0,0.1\n"
        "0,0,\"scatter, coloured\",points,1,1,0.5\n"
        "0,0,\"scatter, coloured\",points,2,0.5,0.9\n"
        "0,1,\"scatter, coloured\",\"say \"\"hi\"\"\",0.5,2,\n"
        "1,0,log x,KL,0.01,30,\n"
        "1,0,log x,KL,0.1,25,\n"
        "1,0,log x,KL,1,12,\n";
    BOOST_TEST(csv.substr(0, expected.size()) == expected);
    // The histogram: 2 geometric bins over [0.02, 0.5], edges 0.02, 0.1, 0.5, holding 2 and 1 values.
    BOOST_TEST(contains(csv, "1,1,log x,hist,0.02,2,\n"));
    BOOST_TEST(contains(csv, "1,1,log x,hist,0.1,1,\n"));
    BOOST_TEST(contains(csv, "1,1,log x,hist,0.5,1,\n"));
}

BOOST_AUTO_TEST_CASE(mismatched_series_are_rejected) {
    io::plot_figure fig;
    fig.panels.push_back({.title = "p"});
    fig.panels[0].series.push_back({.name = "s", .x = {1, 2}, .y = {1}});
    try {
        (void)io::figure_csv(fig);
        BOOST_FAIL("no error");
    } catch (const std::invalid_argument& e) {
        BOOST_TEST(contains(e.what(), "panel 'p', series 's' has 2 x, 1 y"));
    }
    BOOST_CHECK_THROW(io::figure_csv(io::plot_figure{}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(script_describes_the_layout) {
    auto fig = sample_figure();
    const auto script = io::figure_script(fig, "/data/figs", "f.csv", "f.png");
    BOOST_TEST(contains(script, "dir = '/data/figs/'"));
    BOOST_TEST(contains(script, "set multiplot layout 1,2 title 'a ''quoted'' title'"));
    BOOST_TEST(contains(script, "set logscale x"));
    BOOST_TEST(contains(script, "set format x '1e%L'"));  // decades, not 0.000001
    BOOST_TEST(contains(script, "set size ratio -1"));
    BOOST_TEST(contains(script, "lc palette"));
    BOOST_TEST(contains(script, "with steps"));
    fig.columns = 1;
    BOOST_TEST(contains(io::figure_script(fig, "/d", "f.csv", "f.png"), "set multiplot layout 2,1"));
}

BOOST_AUTO_TEST_CASE(without_gnuplot_the_data_and_script_are_written_with_a_note) {
    vediff::testing::scratch_dir dir("plot_missing");
    const auto files = io::write_figure(sample_figure(), dir.path / "fig.png", {.gnuplot = "vediff-no-such-gnuplot"});
    BOOST_TEST(!files.rendered);
    BOOST_TEST(contains(files.note, "vediff-no-such-gnuplot is not installed"));
    BOOST_TEST(contains(files.note, "fig.gp"));
    BOOST_TEST(read_file(files.csv) == io::figure_csv(sample_figure()));
    BOOST_TEST(fs::exists(files.script));
    BOOST_TEST(!fs::exists(files.png));
}

BOOST_AUTO_TEST_CASE(a_failing_gnuplot_is_an_error_and_leaves_no_png) {
    vediff::testing::scratch_dir dir("plot_failing");
    const auto fake = dir.path / "fake-gnuplot";
    {
        std::ofstream out(fake);
        out << "#!/bin/sh\necho 'line 3: undefined variable' >&2\nexit 1\n";
    }
    fs::permissions(fake, fs::perms::owner_all);
    try {
        (void)io::write_figure(sample_figure(), dir.path / "fig.png", {.gnuplot = fake.string()});
        BOOST_FAIL("no error");
    } catch (const io_error& e) {
        BOOST_TEST(contains(e.what(), "gnuplot failed on"));
        BOOST_TEST(contains(e.what(), "undefined variable"));
    }
    BOOST_TEST(!fs::exists(dir.path / "fig.png"));
    for (const auto& entry : fs::directory_iterator(dir.path))  // no temporaries left behind
        BOOST_TEST(!contains(entry.path().filename().string(), ".tmp."), entry.path().string());
}

BOOST_AUTO_TEST_CASE(gnuplot_draws_a_png) {
    if (!gnuplot()) {
        BOOST_TEST_MESSAGE("gnuplot is not installed: PNG checks skipped");
        return;
    }
    vediff::testing::scratch_dir dir("plot_png");
    // A path with a space and a quote, to exercise the quoting end to end.
    const auto png = dir.path / "it's a fig.png";
    const auto files = io::write_figure(sample_figure(), png);
    BOOST_TEST(files.rendered);
    BOOST_TEST(files.note.empty());
    const auto bytes = read_file(png);
    BOOST_REQUIRE(bytes.size() > 8);
    BOOST_TEST(bytes.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));

    // The kept script runs on its own, from another working directory.
    const auto again = dir.path / "again.png";
    const std::string command = fmt::format("cd / && {} -e {} {} 2>/dev/null", io::shell_quote(gnuplot()->string()),
                                            io::shell_quote("output_path = " + io::gnuplot_quote(again.string())),
                                            io::shell_quote(files.script.string()));
    const int status = std::system(command.c_str());
    BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    BOOST_TEST(read_file(again).substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
}

BOOST_AUTO_TEST_CASE(empty_series_and_panels_still_draw) {
    if (!gnuplot()) {
        BOOST_TEST_MESSAGE("gnuplot is not installed: skipped");
        return;
    }
    vediff::testing::scratch_dir dir("plot_empty");
    io::plot_figure fig;
    io::plot_panel some{.title = "one empty series"};
    some.series.push_back({.name = "points", .x = {0, 1}, .y = {1, 0}});
    some.series.push_back({.name = "none off the curve"});
    io::plot_panel only_empty{.title = "only empty series", .log_x = true};
    only_empty.series.push_back({.name = "nothing", .style = io::plot_style::lines});
    fig.panels = {some, only_empty, io::plot_panel{.title = "no series"}};
    const auto files = io::write_figure(fig, dir.path / "empty.png");
    BOOST_TEST(files.rendered);
    BOOST_TEST(read_file(files.png).substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
}
