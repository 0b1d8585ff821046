// A synthetic records dataset with hidden structure, in the scheduler's CSV format, for tests
// and the accuracy bench (bench/learning). The truth the generator hides:
//   - hosts sit in racks (one /24 each) grouped into IDCs; a rack has one uplink shared by all
//     transfers entering or leaving it, thinner than the hosts behind it, and an IDC's link to
//     the others is thinner still;
//   - host NICs are heterogeneous (100 Mbit/s to 10 Gbit/s), some hosts are slowed by noisy
//     neighbours (a hidden factor), and few announce a rate (the nominal NIC, not the slowdown);
//   - a transfer gets the min of the parent's upload share, the child's download share and the
//     fair share of each uplink it crosses, times log-normal noise per pair and per piece;
//   - probes measure RTTs that grow with the distance (rack < IDC < cross-IDC).
// With hide_idc the idc and location columns are empty (the structure is only in addresses,
// RTTs and transfers).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace df::learning {

struct SyntheticOptions {
  uint32_t idcs = 4;
  uint32_t racks_per_idc = 8;
  uint32_t hosts_per_rack = 32;    // 4 * 8 * 32 = 1,024 hosts
  uint32_t parents_per_child = 6;  // transfers per child
  double same_rack_parent_fraction = 0.5;
  uint32_t pieces_per_pair = 3;
  uint32_t probes_per_host = 6;
  double announce_fraction = 0.3;  // hosts announcing their nominal NIC rate
  bool hide_idc = false;
  double pair_noise = 0.15;   // sigma of the log-normal noise per pair
  double piece_noise = 0.10;  // per piece
  uint64_t seed = 1;
};

struct SyntheticDataset {
  std::string download_csv;  // header + rows
  std::string topology_csv;  // header + rows
  uint32_t hosts = 0;
  uint64_t transfers = 0;  // (child, parent) pairs
};

SyntheticDataset GenerateSynthetic(const SyntheticOptions& options);

// Writes DIR/download.csv and DIR/networktopology.csv (creating DIR).
Status WriteSyntheticDir(const SyntheticOptions& options, const std::string& dir);

}  // namespace df::learning
