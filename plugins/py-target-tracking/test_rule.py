import unittest

from rule import BadConfig, NoData, desired


class DesiredTest(unittest.TestCase):
    def test_per_replica_is_the_hpa_rule(self):
        r, reason = desired({"target": 0.5}, 4, [("cpu", [0.75, 0.75]), ("cpu", [0.75])])
        self.assertEqual(r, 6.0)
        self.assertIn("ceil(4 × 0.750 / 0.5) = 6", reason)

    def test_total_divides_the_sum(self):
        r, _ = desired({"target": 10, "per": "total"}, 1, [("rps", [20.0]), ("rps", [25.0])])
        self.assertEqual(r, 5.0)

    def test_unknown_is_not_zero_and_bad_config_is_named(self):
        with self.assertRaises(NoData):
            desired({"target": 1}, 2, [("cpu", [])])
        with self.assertRaisesRegex(BadConfig, "target"):
            desired({"target": 0}, 2, [("cpu", [1.0])])
        with self.assertRaisesRegex(BadConfig, "per"):
            desired({"target": 1, "per": "pod"}, 2, [("cpu", [1.0])])


if __name__ == "__main__":
    unittest.main()
