// Specifications of the task DAG: edges parent -> child, never a cycle.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "scheduler/dag.h"

namespace df::scheduler {
namespace {

// A Dag whose vertices have names, built from a spec such as "a>b b>c" (every edge accepted).
struct NamedDag {
  explicit NamedDag(const std::string& spec) {
    std::istringstream in(spec);
    std::string edge;
    while (in >> edge) {
      auto gt = edge.find('>');
      EXPECT_TRUE(dag.AddEdge(V(edge.substr(0, gt)), V(edge.substr(gt + 1))).ok()) << edge;
    }
  }
  Dag::Vertex V(const std::string& name) {
    auto [it, added] = names.try_emplace(name, 0);
    if (added) it->second = dag.AddVertex();
    return it->second;
  }
  std::string Names(const std::vector<bool>& marks) {
    std::string out;
    for (const auto& [name, v] : names) {
      if (v < marks.size() && marks[v]) out += name;
    }
    return out;
  }
  Dag dag;
  std::map<std::string, Dag::Vertex> names;
};

// Kahn's algorithm: true when every live vertex can be ordered (no cycle).
bool IsAcyclic(const Dag& dag, const std::vector<Dag::Vertex>& vertices) {
  std::map<Dag::Vertex, size_t> in_degree;
  for (auto v : vertices) in_degree[v] = dag.Parents(v).size();
  std::vector<Dag::Vertex> ready;
  for (const auto& [v, d] : in_degree) {
    if (d == 0) ready.push_back(v);
  }
  size_t ordered = 0;
  while (!ready.empty()) {
    auto v = ready.back();
    ready.pop_back();
    ++ordered;
    for (auto c : dag.Children(v)) {
      if (--in_degree[c] == 0) ready.push_back(c);
    }
  }
  return ordered == vertices.size();
}

TEST(Dag, RefusesEdgesThatCloseACycle) {
  struct Case {
    const char* spec;
    const char* parent;
    const char* child;
    bool accepted;
  };
  const Case cases[] = {
      {"a>b", "b", "a", false},                                       // direct back edge
      {"a>b b>c c>d", "d", "a", false},                               // long cycle
      {"a>b b>c c>d", "c", "a", false}, {"a>b b>c", "a", "c", true},  // shortcut: still acyclic
      {"a>b a>c", "b", "c", true},                                    // siblings
      {"a>b c>d", "d", "a", true},                                    // separate chains joined
      {"a>b", "a", "a", false},                                       // self edge
      {"a>b", "a", "b", true},                                        // an existing edge is fine
  };
  for (const Case& c : cases) {
    NamedDag d(c.spec);
    auto parent = d.V(c.parent), child = d.V(c.child);
    EXPECT_EQ(d.dag.CanAddEdge(parent, child), c.accepted)
        << c.spec << " + " << c.parent << ">" << c.child;
    EXPECT_EQ(d.dag.AddEdge(parent, child).ok(), c.accepted) << c.spec;
  }
}

TEST(Dag, AMeshAcceptsCyclesButNoSelfEdge) {
  NamedDag d("a>b b>c");
  d.dag.set_acyclic(false);
  EXPECT_TRUE(d.dag.CanAddEdge(d.V("b"), d.V("a")));
  EXPECT_TRUE(d.dag.AddEdge(d.V("b"), d.V("a")).ok());  // a and b serve each other
  EXPECT_TRUE(d.dag.AddEdge(d.V("c"), d.V("a")).ok());  // a longer loop
  EXPECT_FALSE(d.dag.CanAddEdge(d.V("a"), d.V("a")));
  EXPECT_EQ(d.dag.AddEdge(d.V("a"), d.V("a")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(d.dag.edge_count(), 4u);
  // Descendants terminate on a cycle and include the start only through the loop back to it.
  EXPECT_EQ(d.Names(d.dag.Descendants(d.V("a"))), "abc");
  d.dag.set_acyclic(true);  // from now on no new cycle
  EXPECT_FALSE(d.dag.AddEdge(d.V("c"), d.V("b")).ok());
}

TEST(Dag, UnknownVerticesAreNotFound) {
  NamedDag d("a>b");
  EXPECT_EQ(d.dag.AddEdge(d.V("a"), 999).code(), StatusCode::kNotFound);
  EXPECT_TRUE(d.dag.Parents(999).empty());
  EXPECT_EQ(d.Names(d.dag.Descendants(999)), "");
}

TEST(Dag, DescendantsFollowChildEdgesTransitively) {
  NamedDag d("a>b b>c b>d x>d");
  EXPECT_EQ(d.Names(d.dag.Descendants(d.V("a"))), "bcd");
  EXPECT_EQ(d.Names(d.dag.Descendants(d.V("x"))), "d");
  EXPECT_EQ(d.Names(d.dag.Descendants(d.V("c"))), "");
}

TEST(Dag, RemoveVertexDropsItsEdgesAndItsNumberIsReused) {
  NamedDag d("a>b b>c");
  auto b = d.V("b");
  d.dag.RemoveVertex(b);
  EXPECT_FALSE(d.dag.HasVertex(b));
  EXPECT_TRUE(d.dag.Children(d.V("a")).empty());
  EXPECT_TRUE(d.dag.Parents(d.V("c")).empty());
  EXPECT_EQ(d.dag.edge_count(), 0u);
  EXPECT_TRUE(d.dag.AddEdge(d.V("c"), d.V("a")).ok()) << "no path left between them";
  EXPECT_EQ(d.dag.AddVertex(), b);
  EXPECT_TRUE(d.dag.Parents(b).empty()) << "a reused number starts without edges";
}

TEST(Dag, RandomEdgeInsertionsNeverProduceACycle) {
  std::mt19937 rng(42);
  Dag dag;
  std::vector<Dag::Vertex> vertices;
  for (int i = 0; i < 40; ++i) vertices.push_back(dag.AddVertex());
  std::uniform_int_distribution<size_t> pick(0, vertices.size() - 1);
  size_t accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    if (dag.AddEdge(vertices[pick(rng)], vertices[pick(rng)]).ok()) ++accepted;
    if (i % 7 == 0) dag.RemoveEdge(vertices[pick(rng)], vertices[pick(rng)]);
  }
  EXPECT_GT(accepted, 100u);
  EXPECT_TRUE(IsAcyclic(dag, vertices));
}

}  // namespace
}  // namespace df::scheduler
