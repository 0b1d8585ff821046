// The parent graph of one task: an edge parent -> child means "child downloads from parent".
//
// Invariant (by default): the graph is acyclic. AddEdge refuses any edge that would make a peer a
// parent of one of its ancestors (directly or transitively), so pieces never circulate in a loop
// and every peer has a path back to a peer that reads from the origin. A mesh (set_acyclic(false),
// the scheduler's parent_graph "mesh") allows cycles: two peers may serve each other, each the
// pieces the other lacks; only self-edges are refused.
//
// Vertices are small dense integers handed out by AddVertex (and reused after RemoveVertex), so
// that searches touch only vectors: a search over a 1,000-peer swarm costs microseconds. The
// Task maps vertices to its peers.
//
// Not thread-safe: owned by a Task and touched only under the Scheduler's mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"

namespace df::scheduler {

class Dag {
 public:
  using Vertex = uint32_t;

  // Whether AddEdge refuses edges that close a cycle (true unless set otherwise). Turning it off
  // and on again does not undo cycles already made.
  void set_acyclic(bool acyclic) { acyclic_ = acyclic; }
  bool acyclic() const { return acyclic_; }

  // A new vertex without edges.
  Vertex AddVertex();
  bool HasVertex(Vertex v) const { return v < nodes_.size() && nodes_[v].live; }

  // Removes `v` and every edge touching it; a no-op for an unknown vertex. The number may be
  // handed out again by a later AddVertex.
  void RemoveVertex(Vertex v);

  // True when AddEdge(parent, child) would succeed (or the edge already exists).
  bool CanAddEdge(Vertex parent, Vertex child) const;

  // Adds parent -> child. OK when added or already present. NotFound when either vertex is
  // missing; InvalidArgument when parent == child or, when acyclic, when child is parent's
  // ancestor (the edge would close a cycle). The graph is unchanged on error.
  Status AddEdge(Vertex parent, Vertex child);

  // Removes parent -> child; a no-op when absent.
  void RemoveEdge(Vertex parent, Vertex child);
  bool HasEdge(Vertex parent, Vertex child) const;

  // Empty for an unknown vertex. Invalidated by any edit of the graph.
  const std::vector<Vertex>& Parents(Vertex v) const;
  const std::vector<Vertex>& Children(Vertex v) const;

  // Bitmap over vertex numbers: true for every vertex reachable from `v` through child edges
  // (excluding `v`). Sized to cover every vertex.
  std::vector<bool> Descendants(Vertex v) const;

  size_t vertex_count() const { return nodes_.size() - free_.size(); }
  size_t edge_count() const { return edge_count_; }

 private:
  struct Node {
    bool live = false;
    std::vector<Vertex> parents;
    std::vector<Vertex> children;
  };

  // True when `target` is reachable from `from` through child edges (or equals it).
  bool Reaches(Vertex from, Vertex target) const;

  bool acyclic_ = true;
  std::vector<Node> nodes_;
  std::vector<Vertex> free_;  // numbers of removed vertices, reused first
  size_t edge_count_ = 0;
};

}  // namespace df::scheduler
