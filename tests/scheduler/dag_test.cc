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

// Builds a DAG from a spec such as "a>b b>c": every edge must be accepted.
Dag BuildDag(const std::string& spec) {
  Dag dag;
  std::istringstream in(spec);
  std::string edge;
  while (in >> edge) {
    auto gt = edge.find('>');
    std::string parent = edge.substr(0, gt), child = edge.substr(gt + 1);
    dag.AddVertex(parent);
    dag.AddVertex(child);
    EXPECT_TRUE(dag.AddEdge(parent, child).ok()) << edge;
  }
  return dag;
}

// Kahn's algorithm: true when every vertex can be ordered (no cycle).
bool IsAcyclic(const Dag& dag, const std::vector<std::string>& ids) {
  std::map<std::string, size_t> in_degree;
  for (const auto& id : ids) in_degree[id] = dag.Parents(id).size();
  std::vector<std::string> ready;
  for (const auto& [id, d] : in_degree) {
    if (d == 0) ready.push_back(id);
  }
  size_t ordered = 0;
  while (!ready.empty()) {
    std::string id = ready.back();
    ready.pop_back();
    ++ordered;
    for (const auto& c : dag.Children(id)) {
      if (--in_degree[c] == 0) ready.push_back(c);
    }
  }
  return ordered == ids.size();
}

TEST(Dag, RefusesEdgesThatCloseACycle) {
  struct Case {
    const char* spec;
    const char* parent;
    const char* child;
    bool accepted;
  };
  const Case cases[] = {
      {"a>b", "b", "a", false},              // direct back edge
      {"a>b b>c c>d", "d", "a", false},      // long cycle
      {"a>b b>c c>d", "c", "a", false},
      {"a>b b>c", "a", "c", true},           // shortcut: still acyclic
      {"a>b a>c", "b", "c", true},           // siblings
      {"a>b c>d", "d", "a", true},           // separate chains joined
      {"a>b", "a", "a", false},              // self edge
      {"a>b", "a", "b", true},               // existing edge is fine
  };
  for (const Case& c : cases) {
    Dag dag = BuildDag(c.spec);
    dag.AddVertex(c.parent);
    dag.AddVertex(c.child);
    EXPECT_EQ(dag.CanAddEdge(c.parent, c.child), c.accepted) << c.spec << " + " << c.parent
                                                             << ">" << c.child;
    EXPECT_EQ(dag.AddEdge(c.parent, c.child).ok(), c.accepted) << c.spec;
  }
}

TEST(Dag, UnknownVerticesAreNotFound) {
  Dag dag = BuildDag("a>b");
  EXPECT_EQ(dag.AddEdge("a", "zz").code(), StatusCode::kNotFound);
  EXPECT_TRUE(dag.Parents("zz").empty());
  EXPECT_TRUE(dag.Descendants("zz").empty());
}

TEST(Dag, DescendantsFollowChildEdgesTransitively) {
  Dag dag = BuildDag("a>b b>c b>d x>d");
  EXPECT_EQ(dag.Descendants("a"), (Dag::IdSet{"b", "c", "d"}));
  EXPECT_EQ(dag.Descendants("x"), (Dag::IdSet{"d"}));
  EXPECT_TRUE(dag.Descendants("c").empty());
}

TEST(Dag, RemoveVertexDropsItsEdges) {
  Dag dag = BuildDag("a>b b>c");
  dag.RemoveVertex("b");
  EXPECT_FALSE(dag.HasVertex("b"));
  EXPECT_TRUE(dag.Children("a").empty());
  EXPECT_TRUE(dag.Parents("c").empty());
  EXPECT_EQ(dag.edge_count(), 0u);
  EXPECT_TRUE(dag.AddEdge("c", "a").ok()) << "no path left between them";
}

TEST(Dag, RandomEdgeInsertionsNeverProduceACycle) {
  std::mt19937 rng(42);
  std::vector<std::string> ids;
  Dag dag;
  for (int i = 0; i < 40; ++i) {
    ids.push_back("p" + std::to_string(i));
    dag.AddVertex(ids.back());
  }
  std::uniform_int_distribution<size_t> pick(0, ids.size() - 1);
  size_t accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    const auto& parent = ids[pick(rng)];
    const auto& child = ids[pick(rng)];
    if (dag.AddEdge(parent, child).ok()) ++accepted;
    if (i % 7 == 0) dag.RemoveEdge(ids[pick(rng)], ids[pick(rng)]);
  }
  EXPECT_GT(accepted, 100u);
  EXPECT_TRUE(IsAcyclic(dag, ids));
}

}  // namespace
}  // namespace df::scheduler
