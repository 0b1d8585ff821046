#include "learning/synthetic.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "learning/dataset.h"

namespace df::learning {
namespace {

constexpr double kMbit = 125'000.0;  // bytes/s per Mbit/s
constexpr int64_t kStartMs = 1'700'000'000'000;

struct SimHost {
  HostRecord record;
  uint32_t rack = 0;
  uint32_t idc = 0;
  double upload = 0;  // true bytes/s
  double download = 0;
};

struct Transfer {
  uint32_t child = 0;
  uint32_t parent = 0;
};

}  // namespace

SyntheticDataset GenerateSynthetic(const SyntheticOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);
  const uint32_t racks = o.idcs * o.racks_per_idc;
  const uint32_t n = racks * o.hosts_per_rack;

  // Racks: uplinks of 1, 2.5 or 5 Gbit/s; IDC links 10 Gbit/s.
  std::vector<double> rack_uplink(racks);
  for (auto& u : rack_uplink) {
    const double r = unit(rng);
    u = (r < 0.4 ? 1000 : r < 0.8 ? 2500 : 5000) * kMbit;
  }
  const double idc_link = 10000 * kMbit;

  std::vector<SimHost> hosts(n);
  for (uint32_t i = 0; i < n; ++i) {
    SimHost& h = hosts[i];
    h.rack = i / o.hosts_per_rack;
    h.idc = h.rack / o.racks_per_idc;
    const uint32_t slot = i % o.hosts_per_rack;
    const double r = unit(rng);
    const double nic = (r < 0.2 ? 100 : r < 0.7 ? 1000 : r < 0.85 ? 2500 : 10000) * kMbit;
    const bool seed = slot == 0 && h.rack % o.racks_per_idc == 0;  // one seed per IDC
    const double nominal = seed ? 10000 * kMbit : nic;
    const double slowdown = unit(rng) < 0.3 ? 0.3 + 0.6 * unit(rng) : 1.0;
    h.upload = nominal * slowdown;
    h.download = nominal * (unit(rng) < 0.2 ? 0.5 + 0.5 * unit(rng) : 1.0);
    HostRecord& rec = h.record;
    rec.ip = "10." + std::to_string(h.idc) + "." + std::to_string(h.rack % o.racks_per_idc) + "." +
             std::to_string(slot + 1);
    rec.id = "host-" + std::to_string(i) + "-" + rec.ip;
    if (!o.hide_idc) {
      rec.idc = "idc" + std::to_string(h.idc) + "-rack" + std::to_string(h.rack % o.racks_per_idc);
      rec.location = "cn|region" + std::to_string(h.idc / 2) + "|zone" + std::to_string(h.idc);
    }
    rec.seed = seed;
    if (unit(rng) < o.announce_fraction) {
      rec.announced_upload_bytes_per_sec = static_cast<uint64_t>(nominal);
      rec.announced_download_bytes_per_sec = static_cast<uint64_t>(nominal);
    }
  }

  // Who downloads from whom.
  std::vector<Transfer> transfers;
  std::set<std::pair<uint32_t, uint32_t>> seen;
  for (uint32_t c = 0; c < n; ++c) {
    for (uint32_t k = 0, tries = 0; k < o.parents_per_child && tries < 100; ++tries) {
      uint32_t p;
      if (unit(rng) < o.same_rack_parent_fraction) {
        p = hosts[c].rack * o.hosts_per_rack + static_cast<uint32_t>(rng() % o.hosts_per_rack);
      } else {
        p = static_cast<uint32_t>(rng() % n);
      }
      if (p == c || !seen.insert({c, p}).second) continue;
      transfers.push_back({c, p});
      ++k;
    }
  }
  std::vector<uint32_t> fanout(n, 0), fanin(n, 0), rack_out(racks, 0), rack_in(racks, 0);
  std::vector<uint32_t> idc_out(o.idcs, 0), idc_in(o.idcs, 0);
  for (const Transfer& t : transfers) {
    ++fanout[t.parent];
    ++fanin[t.child];
    if (hosts[t.child].rack != hosts[t.parent].rack) {
      ++rack_out[hosts[t.parent].rack];
      ++rack_in[hosts[t.child].rack];
    }
    if (hosts[t.child].idc != hosts[t.parent].idc) {
      ++idc_out[hosts[t.parent].idc];
      ++idc_in[hosts[t.child].idc];
    }
  }
  std::vector<double> bandwidth(transfers.size());
  std::vector<double> sent(n, 0), received(n, 0);
  for (size_t i = 0; i < transfers.size(); ++i) {
    const SimHost& c = hosts[transfers[i].child];
    const SimHost& p = hosts[transfers[i].parent];
    double bw =
        std::min(p.upload / fanout[transfers[i].parent], c.download / fanin[transfers[i].child]);
    if (c.rack != p.rack) {
      bw = std::min(
          {bw, rack_uplink[p.rack] / rack_out[p.rack], rack_uplink[c.rack] / rack_in[c.rack]});
    }
    if (c.idc != p.idc) bw = std::min({bw, idc_link / idc_out[p.idc], idc_link / idc_in[c.idc]});
    bw *= std::exp(o.pair_noise * normal(rng));
    bandwidth[i] = bw;
    sent[transfers[i].parent] += bw;
    received[transfers[i].child] += bw;
  }
  // What the scheduler learns: what each link carried in aggregate, else the 1 Gbit/s prior.
  for (uint32_t i = 0; i < n; ++i) {
    HostRecord& rec = hosts[i].record;
    rec.learned_upload_bytes_per_sec = static_cast<uint64_t>(
        sent[i] > 0                          ? sent[i]
        : rec.announced_upload_bytes_per_sec ? rec.announced_upload_bytes_per_sec
                                             : 1000 * kMbit);
    rec.learned_download_bytes_per_sec = static_cast<uint64_t>(
        received[i] > 0                        ? received[i]
        : rec.announced_download_bytes_per_sec ? rec.announced_download_bytes_per_sec
                                               : 1000 * kMbit);
    rec.unix_ms = kStartMs;
  }

  SyntheticDataset out;
  out.hosts = n;
  out.transfers = transfers.size();
  out.download_csv = std::string(DownloadCsvHeader()) + "\n";
  const uint64_t piece = 4ull << 20;
  for (size_t i = 0; i < transfers.size(); ++i) {
    for (uint32_t k = 0; k < o.pieces_per_pair; ++k) {
      const double bw = bandwidth[i] * std::exp(o.piece_noise * normal(rng));
      const auto cost = static_cast<uint64_t>(static_cast<double>(piece) * 1e9 / bw) + 1;
      out.download_csv += DownloadCsvLine(kStartMs + static_cast<int64_t>(i), "task-synthetic",
                                          hosts[transfers[i].child].record,
                                          hosts[transfers[i].parent].record, piece, cost);
    }
  }
  out.topology_csv = std::string(NetworkTopologyCsvHeader()) + "\n";
  for (uint32_t s = 0; s < n; ++s) {
    for (uint32_t k = 0; k < o.probes_per_host; ++k) {
      uint32_t d = unit(rng) < 0.5 ? hosts[s].rack * o.hosts_per_rack +
                                         static_cast<uint32_t>(rng() % o.hosts_per_rack)
                                   : static_cast<uint32_t>(rng() % n);
      if (d == s) continue;
      const double base_us = hosts[s].rack == hosts[d].rack ? 80
                             : hosts[s].idc == hosts[d].idc ? 250
                                                            : 1500;
      const auto rtt = static_cast<uint64_t>(base_us * 1000 * std::exp(0.2 * normal(rng)));
      out.topology_csv += TopologyCsvLine(kStartMs + 60'000, hosts[s].record, hosts[d].record, rtt,
                                          5, kStartMs, kStartMs + 60'000);
    }
  }
  return out;
}

Status WriteSyntheticDir(const SyntheticOptions& options, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("create " + dir + ": " + ec.message());
  const SyntheticDataset data = GenerateSynthetic(options);
  for (const auto& [name, text] :
       {std::pair<std::string, const std::string*>{"download.csv", &data.download_csv},
        {"networktopology.csv", &data.topology_csv}}) {
    std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
    out << *text;
    if (!out) return IoError("write " + dir + "/" + name);
  }
  return Status::Ok();
}

}  // namespace df::learning
