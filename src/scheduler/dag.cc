#include "scheduler/dag.h"

#include <algorithm>
#include <string>

namespace df::scheduler {
namespace {

const std::vector<Dag::Vertex> kNone;

void Erase(std::vector<Dag::Vertex>& v, Dag::Vertex x) {
  auto it = std::find(v.begin(), v.end(), x);
  if (it != v.end()) {
    *it = v.back();
    v.pop_back();
  }
}

}  // namespace

Dag::Vertex Dag::AddVertex() {
  Vertex v;
  if (!free_.empty()) {
    v = free_.back();
    free_.pop_back();
  } else {
    v = static_cast<Vertex>(nodes_.size());
    nodes_.emplace_back();
  }
  nodes_[v].live = true;
  return v;
}

void Dag::RemoveVertex(Vertex v) {
  if (!HasVertex(v)) return;
  Node& node = nodes_[v];
  for (Vertex p : node.parents) Erase(nodes_[p].children, v);
  for (Vertex c : node.children) Erase(nodes_[c].parents, v);
  edge_count_ -= node.parents.size() + node.children.size();
  node = Node{};
  free_.push_back(v);
}

bool Dag::Reaches(Vertex from, Vertex target) const {
  if (from == target) return true;
  std::vector<bool> visited(nodes_.size());
  std::vector<Vertex> stack{from};
  visited[from] = true;
  while (!stack.empty()) {
    Vertex v = stack.back();
    stack.pop_back();
    for (Vertex c : nodes_[v].children) {
      if (c == target) return true;
      if (!visited[c]) {
        visited[c] = true;
        stack.push_back(c);
      }
    }
  }
  return false;
}

bool Dag::HasEdge(Vertex parent, Vertex child) const {
  if (!HasVertex(parent) || !HasVertex(child)) return false;
  // Search the shorter list: a child has at most candidate_parent_limit parents.
  const auto& parents = nodes_[child].parents;
  return std::find(parents.begin(), parents.end(), parent) != parents.end();
}

bool Dag::CanAddEdge(Vertex parent, Vertex child) const {
  if (!HasVertex(parent) || !HasVertex(child) || parent == child) return false;
  return HasEdge(parent, child) || !acyclic_ || !Reaches(child, parent);
}

Status Dag::AddEdge(Vertex parent, Vertex child) {
  if (!HasVertex(parent)) return NotFound("dag: unknown parent vertex " + std::to_string(parent));
  if (!HasVertex(child)) return NotFound("dag: unknown child vertex " + std::to_string(child));
  if (parent == child) return InvalidArgument("dag: a vertex cannot be its own parent");
  if (HasEdge(parent, child)) return Status::Ok();
  if (acyclic_ && Reaches(child, parent)) {
    return InvalidArgument("dag: edge " + std::to_string(parent) + " -> " + std::to_string(child) +
                           " would close a cycle");
  }
  nodes_[parent].children.push_back(child);
  nodes_[child].parents.push_back(parent);
  ++edge_count_;
  return Status::Ok();
}

void Dag::RemoveEdge(Vertex parent, Vertex child) {
  if (!HasEdge(parent, child)) return;
  Erase(nodes_[parent].children, child);
  Erase(nodes_[child].parents, parent);
  --edge_count_;
}

const std::vector<Dag::Vertex>& Dag::Parents(Vertex v) const {
  return HasVertex(v) ? nodes_[v].parents : kNone;
}

const std::vector<Dag::Vertex>& Dag::Children(Vertex v) const {
  return HasVertex(v) ? nodes_[v].children : kNone;
}

std::vector<bool> Dag::Descendants(Vertex v) const {
  std::vector<bool> out(nodes_.size());
  if (!HasVertex(v)) return out;
  std::vector<Vertex> stack{v};
  while (!stack.empty()) {
    Vertex x = stack.back();
    stack.pop_back();
    for (Vertex c : nodes_[x].children) {
      if (!out[c]) {
        out[c] = true;
        stack.push_back(c);
      }
    }
  }
  return out;
}

}  // namespace df::scheduler
