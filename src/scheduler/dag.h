// The parent graph of one task: an edge parent -> child means "child downloads from parent".
//
// Invariant: the graph is acyclic. AddEdge refuses any edge that would make a peer a parent of
// one of its ancestors (directly or transitively), so pieces never circulate in a loop and every
// peer has a path back to a peer that reads from the origin.
//
// Vertices are peer ids. Not thread-safe: owned by a Task and touched only under the Scheduler's
// mutex.
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "common/status.h"

namespace df::scheduler {

class Dag {
 public:
  using IdSet = std::unordered_set<std::string>;

  // Adds a vertex without edges; a no-op when it exists.
  void AddVertex(const std::string& id);
  bool HasVertex(const std::string& id) const { return vertices_.contains(id); }

  // Removes `id` and every edge touching it; a no-op for an unknown id.
  void RemoveVertex(const std::string& id);

  // True when AddEdge(parent, child) would succeed (or the edge already exists).
  bool CanAddEdge(const std::string& parent, const std::string& child) const;

  // Adds parent -> child. OK when added or already present. NotFound when either vertex is
  // missing; InvalidArgument when parent == child or when child is parent's ancestor (the edge
  // would close a cycle). The graph is unchanged on error.
  Status AddEdge(const std::string& parent, const std::string& child);

  // Removes parent -> child; a no-op when absent.
  void RemoveEdge(const std::string& parent, const std::string& child);

  // Empty set for an unknown id.
  const IdSet& Parents(const std::string& id) const;
  const IdSet& Children(const std::string& id) const;

  // Every vertex reachable from `id` through child edges, excluding `id` itself.
  IdSet Descendants(const std::string& id) const;

  size_t vertex_count() const { return vertices_.size(); }
  size_t edge_count() const { return edge_count_; }

 private:
  struct Vertex {
    IdSet parents;
    IdSet children;
  };

  // True when `target` is reachable from `from` through child edges (or equals it).
  bool Reaches(const std::string& from, const std::string& target) const;

  std::unordered_map<std::string, Vertex> vertices_;
  size_t edge_count_ = 0;
};

}  // namespace df::scheduler
