#include "scheduler/dag.h"

#include <vector>

namespace df::scheduler {
namespace {
const Dag::IdSet kEmpty;
}  // namespace

void Dag::AddVertex(const std::string& id) { vertices_.try_emplace(id); }

void Dag::RemoveVertex(const std::string& id) {
  auto it = vertices_.find(id);
  if (it == vertices_.end()) return;
  for (const auto& parent : it->second.parents) vertices_[parent].children.erase(id);
  for (const auto& child : it->second.children) vertices_[child].parents.erase(id);
  edge_count_ -= it->second.parents.size() + it->second.children.size();
  vertices_.erase(it);
}

bool Dag::Reaches(const std::string& from, const std::string& target) const {
  if (from == target) return true;
  // Depth-first over child edges; the visited set keeps this linear in the subgraph's size.
  std::vector<const std::string*> stack{&from};
  IdSet visited{from};
  while (!stack.empty()) {
    const std::string* id = stack.back();
    stack.pop_back();
    for (const auto& child : Children(*id)) {
      if (child == target) return true;
      if (visited.insert(child).second) stack.push_back(&child);
    }
  }
  return false;
}

bool Dag::CanAddEdge(const std::string& parent, const std::string& child) const {
  if (!HasVertex(parent) || !HasVertex(child) || parent == child) return false;
  if (Children(parent).contains(child)) return true;
  return !Reaches(child, parent);
}

Status Dag::AddEdge(const std::string& parent, const std::string& child) {
  if (!HasVertex(parent)) return NotFound("dag: unknown parent " + parent);
  if (!HasVertex(child)) return NotFound("dag: unknown child " + child);
  if (parent == child) return InvalidArgument("dag: " + parent + " cannot be its own parent");
  if (Children(parent).contains(child)) return Status::Ok();
  if (Reaches(child, parent)) {
    return InvalidArgument("dag: " + parent + " -> " + child + " would close a cycle");
  }
  vertices_[parent].children.insert(child);
  vertices_[child].parents.insert(parent);
  ++edge_count_;
  return Status::Ok();
}

void Dag::RemoveEdge(const std::string& parent, const std::string& child) {
  auto p = vertices_.find(parent);
  auto c = vertices_.find(child);
  if (p == vertices_.end() || c == vertices_.end()) return;
  if (p->second.children.erase(child) > 0) {
    c->second.parents.erase(parent);
    --edge_count_;
  }
}

const Dag::IdSet& Dag::Parents(const std::string& id) const {
  auto it = vertices_.find(id);
  return it == vertices_.end() ? kEmpty : it->second.parents;
}

const Dag::IdSet& Dag::Children(const std::string& id) const {
  auto it = vertices_.find(id);
  return it == vertices_.end() ? kEmpty : it->second.children;
}

Dag::IdSet Dag::Descendants(const std::string& id) const {
  IdSet out;
  std::vector<const std::string*> stack{&id};
  while (!stack.empty()) {
    const std::string* v = stack.back();
    stack.pop_back();
    for (const auto& child : Children(*v)) {
      if (out.insert(child).second) stack.push_back(&child);
    }
  }
  out.erase(id);
  return out;
}

}  // namespace df::scheduler
