// What pgJDBC (Debian's libpostgresql-jdbc-java) expects of Strata's
// gateway. Run by the end-to-end test `gateway::pgjdbc_*` as a
// single-file program:
//     java -cp /usr/share/java/postgresql.jar JdbcCheck.java PORT NATION_DIR
// Exits non-zero with the failing check.

import java.math.BigDecimal;
import java.sql.*;

public class JdbcCheck {
    static void check(String what, Object got, Object want) {
        if (got == null ? want != null : !got.equals(want)) {
            System.err.println(what + ": got " + got + ", want " + want);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/strata";
        try (Connection conn = DriverManager.getConnection(url, "strata", "")) {
            DatabaseMetaData meta = conn.getMetaData();
            check("server major version", meta.getDatabaseMajorVersion(), 14);
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE EXTERNAL TABLE nation STORED AS PARQUET LOCATION '" + args[1] + "'");
                try (ResultSet rs = st.executeQuery(
                        "SELECT 1::int4, 2::int8, 1.5::float8, 'x'::text, true, null::int4, "
                        + "date '2024-01-02', timestamp '2024-01-02 03:04:05', 12.34::decimal(10,2)")) {
                    rs.next();
                    check("int4", rs.getInt(1), 1);
                    check("int8", rs.getLong(2), 2L);
                    check("float8", rs.getDouble(3), 1.5);
                    check("text", rs.getString(4), "x");
                    check("bool", rs.getBoolean(5), true);
                    check("null", rs.getObject(6), null);
                    check("date", rs.getDate(7).toString(), "2024-01-02");
                    check("timestamp", rs.getTimestamp(8).toString(), "2024-01-02 03:04:05.0");
                    check("numeric", rs.getBigDecimal(9), new BigDecimal("12.34"));
                }
            }
            // Past pgJDBC's prepareThreshold (5) the statement is a named
            // server-side prepared statement, bound again each time.
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT n_name FROM nation WHERE n_nationkey = ?")) {
                for (int i = 0; i < 8; i++) {
                    ps.setLong(1, 7);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        check("bound key, run " + i, rs.getString(1), "GERMANY");
                    }
                }
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM no_such_table");
                check("a missing table fails", "no error", "an error");
            } catch (SQLException e) {
                check("SQLSTATE of a missing table", e.getSQLState(), "42P01");
            }
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                boolean found = false;
                while (rs.next()) {
                    found |= rs.getString("TABLE_NAME").equals("nation");
                }
                check("getTables lists nation", found, true);
            }
        }
        System.out.println("pgjdbc: all checks passed");
    }
}
