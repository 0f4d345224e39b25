{{ config(materialized='view') }}
select * from (values (1, 'one'), (2, 'two'), (3, 'three')) as t(id, name)
